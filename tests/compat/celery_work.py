"""A real Celery worker (acks_late unless CELERY_ACKS_LATE=0, prefetch multiplier 1) and the library's own count of a
queue's work: waiting (kombu's queue size) and in progress (the queue's tasks in
`inspect().active()` and `.reserved()`).

The broker is redis://127.0.0.1:$CELERY_PORT/0 with kombu's `global_keyprefix`
$CELERY_PREFIX (may be empty).
Usage: python3 celery_work.py serve QUEUE CONCURRENCY
         runs a worker on QUEUE (thread pool) until killed
       python3 celery_work.py push QUEUE COUNT RELEASE_KEY
         sends COUNT `hold` tasks; each runs until the key RELEASE_KEY exists (at most 60 s)
       python3 celery_work.py count QUEUE
         prints {"waiting": ..., "running": active, "reserved": reserved}
"""
import json
import os
import sys
import time

from celery import Celery
from redis import Redis

PORT = os.environ["CELERY_PORT"]
app = Celery("celery_work", broker=f"redis://127.0.0.1:{PORT}/0")
# CELERY_ACKS_LATE=0: Celery's default, a task acknowledged when it starts.
app.conf.task_acks_late = os.environ.get("CELERY_ACKS_LATE") != "0"
app.conf.worker_prefetch_multiplier = 1
app.conf.broker_connection_retry_on_startup = True
if os.environ.get("CELERY_PREFIX"):
    app.conf.broker_transport_options = {"global_keyprefix": os.environ["CELERY_PREFIX"]}


@app.task(name="celery_work.hold")
def hold(release_key):
    """Stays in progress until the test releases it."""
    redis = Redis(host="127.0.0.1", port=int(PORT))
    deadline = time.time() + 60
    while not redis.exists(release_key) and time.time() < deadline:
        time.sleep(0.1)


def of_queue(replies, queue):
    """The tasks in an inspect reply ({worker: [task, ...]}) that came from `queue`."""
    tasks = [task for worker_tasks in (replies or {}).values() for task in worker_tasks]
    return sum(1 for task in tasks if task["delivery_info"]["routing_key"] == queue)


def main():
    action, queue = sys.argv[1], sys.argv[2]
    if action == "serve":
        app.worker_main(
            ["worker", "-Q", queue, "-c", sys.argv[3], "-P", "threads", "-n", f"{queue}@%h",
             "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        )
    elif action == "push":
        count, release_key = int(sys.argv[3]), sys.argv[4]
        for _ in range(count):
            app.send_task("celery_work.hold", args=[release_key], queue=queue)
        print(json.dumps({"pushed": count}))
    elif action == "count":
        inspect = app.control.inspect(timeout=1.0)
        active, reserved = of_queue(inspect.active(), queue), of_queue(inspect.reserved(), queue)
        with app.connection_for_write() as connection:
            # kombu's own queue size (what queue_declare's message_count reports; a passive
            # declare misses prefixed queues in kombu 5.5).
            waiting = connection.default_channel._size(queue)
        print(json.dumps({"waiting": waiting, "running": active, "reserved": reserved}))
    else:
        sys.exit(f"unknown action {action}")


if __name__ == "__main__":
    main()
