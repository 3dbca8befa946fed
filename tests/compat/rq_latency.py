"""Enqueues and takes RQ jobs with the real library; prints `now - enqueued_at` of the job RQ
takes next as JSON.

Usage: python3 rq_latency.py PORT QUEUE enqueue GAP_SECONDS | latency | take
  enqueue: enqueues job-a, waits GAP_SECONDS, enqueues job-b
  take:    takes the next job as a worker does (Queue.dequeue_any)
Each prints {"latency": seconds (0 when nothing waits), "at": when it was measured, ...}.
"""
import json
import sys
import time

from redis import Redis
from rq import Queue

port, name, action = sys.argv[1], sys.argv[2], sys.argv[3]
connection = Redis(host="127.0.0.1", port=int(port))
queue = Queue(name, connection=connection)
taken = None
if action == "enqueue":
    queue.enqueue("os.getcwd", job_id="job-a")
    time.sleep(float(sys.argv[4]))
    queue.enqueue("os.getcwd", job_id="job-b")
elif action == "take":
    result = Queue.dequeue_any([queue], None, connection=connection)
    taken = result[0].id if result else None
elif action != "latency":
    sys.exit(f"unknown action {action}")
jobs = queue.jobs
now = time.time()
latency = now - jobs[0].enqueued_at.timestamp() if jobs else 0.0
print(json.dumps({"latency": latency, "at": now, "count": len(jobs), "taken": taken}))
