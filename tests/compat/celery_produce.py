"""Sends Celery tasks with priorities 0-9 to a queue with no worker; prints kombu's size."""
import json
import sys

from celery import Celery

port, queue, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
app = Celery(broker=f"redis://127.0.0.1:{port}/0")
options = {}
if prefix:
    options["global_keyprefix"] = prefix
app.conf.broker_transport_options = options
for priority in range(10):
    for _ in range(priority + 1):
        app.send_task("jobs.work", args=[priority], queue=queue, priority=priority)
with app.connection_for_write() as connection:
    size = connection.default_channel.queue_declare(queue=queue, passive=True).message_count
print(json.dumps({"size": size, "sent": sum(p + 1 for p in range(10))}))
