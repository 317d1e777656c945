"""Replay: the whole closed loop on a data set, in event-time order (``driftline replay``,
``driftline demo``). Read in this order:

1. :mod:`.run`: uploads the first window, replays every later row as a scoring request
   with its label delayed, steps event time forward;
2. :mod:`.settle`: waits, after each step, until every function has caught up;
3. :mod:`.report`: the summary and the HTML report of a replay;
4. ``sample/``: the demo's data (UCI bike sharing, hourly) and model spec.
"""
