"""Blinker signals sent by flask-engage. The sender is always the Flask app.

Subscribe with ``signal.connect(receiver, app)`` or ``signal.connect(receiver)``.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A customer was created or updated by ``identify`` (kwargs: ``customer``).
customer_identified = _signals.signal("customer-identified")
#: An event was recorded (kwargs: ``event``, ``customer``).
event_tracked = _signals.signal("event-tracked")
#: A customer joined a segment, after the change committed (kwargs: ``segment``, ``customer``).
segment_joined = _signals.signal("segment-joined")
#: A customer left a segment, after the change committed (kwargs: ``segment``, ``customer``).
segment_left = _signals.signal("segment-left")
#: A message was delivered to its channel (kwargs: ``message``, ``customer``).
message_sent = _signals.signal("message-sent")
#: A message could not be delivered (kwargs: ``message``, ``customer``, ``error``).
message_failed = _signals.signal("message-failed")
#: A customer unsubscribed from a channel (kwargs: ``customer``, ``channel``).
customer_unsubscribed = _signals.signal("customer-unsubscribed")
#: Two customers were merged (kwargs: ``source_id``, ``customer`` – the destination).
customers_merged = _signals.signal("customers-merged")
