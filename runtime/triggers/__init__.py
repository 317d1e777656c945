"""Triggers: uploads to a bucket become ``dataset.uploaded`` events, schedules become batch
jobs. Read in this order:

1. :mod:`.watcher`: a bucket watcher that polls a prefix with a saved checkpoint, for
   stores that cannot notify;
2. :mod:`.uploads`: which objects are uploads (``uploads/<model>/<file>.csv``) and the
   :class:`~.uploads.UploadWatcher` that publishes them;
3. :mod:`.notifications`: S3/MinIO bucket notifications, from a webhook or a Kafka topic;
4. :mod:`.schedule`: the specs' ``[[batch]]`` schedules, as ``batch.requested`` events.

Webhooks and published events are HTTP triggers: see :mod:`driftline.runtime.http`.
"""
