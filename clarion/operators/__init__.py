"""Operators' tools: dead-letter queues, status and inspection (``clarion dlq|status|inspect``).

* :mod:`clarion.operators.deadletters` - the broker side: one small interface
  (:class:`DeadLetters`) over Dramatiq's Redis and RabbitMQ dead-letter queues,
  plus the queue counts and worker liveness ``clarion status`` reports;
* :mod:`clarion.operators.dlq` - list, show, requeue and purge, joining each
  dead letter with its ``notification_deliveries`` row;
* :mod:`clarion.operators.status` - the health report and ``--check``;
* :mod:`clarion.operators.inspect` - one notification, addresses masked;
* :mod:`clarion.operators.commands` - the argparse wiring and the output.
"""
