"""The HTTP gateway: how people and other systems reach a running Driftline. Read in this order:

1. :mod:`.app`: the FastAPI application and its route list (events, hooks, notifications,
   models, ``/v2``, ``/metrics``);
2. :mod:`.problems`: how every endpoint says no: the :class:`~.problems.Problem` error
   body, its stable :class:`~.problems.Reason` words, the statuses of domain errors;
   :mod:`.shared`: what else every endpoint shares: body limits, the bearer token,
   publishing onto the bus;
3. :mod:`.cloudevents` and :mod:`.webhooks`: the two ways to publish an event over HTTP
   (CloudEvents, signed Standard Webhooks);
4. :mod:`.oip` and :mod:`.inference`: real-time scoring over the Open Inference Protocol;
5. :mod:`.metrics`: Prometheus metrics;
6. :mod:`.server`: ``driftline up``, the gateway with the functions and triggers around it.
"""
