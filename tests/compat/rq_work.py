"""A real RQ worker and the library's own count of a queue's work, waiting and in progress.

Usage: python3 rq_work.py PORT serve QUEUE
         runs one worker on QUEUE (it forks a work horse per job) until killed
       python3 rq_work.py PORT push QUEUE COUNT RELEASE_KEY
         enqueues COUNT `hold` jobs; each runs until the key RELEASE_KEY exists (at most 60 s)
       python3 rq_work.py PORT count QUEUE
         prints {"waiting": Queue.count, "running": StartedJobRegistry.count}
"""
import json
import sys
import time

from redis import Redis
from rq import Queue, Worker
from rq.registry import StartedJobRegistry


def hold(port, release_key):
    """Stays in progress until the test releases it."""
    redis = Redis(host="127.0.0.1", port=int(port))
    deadline = time.time() + 60
    while not redis.exists(release_key) and time.time() < deadline:
        time.sleep(0.1)


def main():
    port, action, name = sys.argv[1], sys.argv[2], sys.argv[3]
    connection = Redis(host="127.0.0.1", port=int(port))
    queue = Queue(name, connection=connection)
    if action == "serve":
        Worker([queue], connection=connection, name=f"{name}-{port}").work(logging_level="WARNING")
    elif action == "push":
        count, release_key = int(sys.argv[4]), sys.argv[5]
        for _ in range(count):
            queue.enqueue("rq_work.hold", port, release_key, job_timeout=120)
        print(json.dumps({"pushed": count}))
    elif action == "count":
        started = StartedJobRegistry(name, connection=connection)
        print(json.dumps({"waiting": queue.count, "running": started.count}))
    else:
        sys.exit(f"unknown action {action}")


if __name__ == "__main__":
    main()
