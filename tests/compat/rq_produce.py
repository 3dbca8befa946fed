"""Enqueues RQ jobs (and a scheduled one, which RQ does not count) and prints Queue.count."""
import json
import sys
from datetime import timedelta

from redis import Redis
from rq import Queue

port, name = sys.argv[1], sys.argv[2]
queue = Queue(name, connection=Redis(host="127.0.0.1", port=int(port)))
for i in range(7):
    queue.enqueue("os.getcwd", job_id=f"job-{i}")
queue.enqueue_in(timedelta(hours=1), "os.getcwd")
print(json.dumps({"count": queue.count}))
