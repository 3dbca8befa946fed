// A real BullMQ worker and the library's own count of a queue's work, waiting and in progress.
// Usage: node bullmq_work.cjs PORT QUEUE serve CONCURRENCY
//          runs a Worker on QUEUE until killed
//        node bullmq_work.cjs PORT QUEUE push COUNT RELEASE_KEY
//          adds COUNT jobs; each runs until the key RELEASE_KEY exists (at most 60 s)
//        node bullmq_work.cjs PORT QUEUE count
//          prints {"waiting": wait + paused + prioritized, "running": active} (getJobCounts)
const { Queue, Worker } = require("bullmq");
const IORedis = require("ioredis");

async function hold(redis, releaseKey) {
  const deadline = Date.now() + 60000;
  while (!(await redis.exists(releaseKey)) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function main() {
  const [port, name, action, arg, releaseKey] = process.argv.slice(2);
  const connection = { host: "127.0.0.1", port: Number(port) };
  if (action === "serve") {
    const redis = new IORedis(connection);
    const worker = new Worker(name, (job) => hold(redis, job.data.releaseKey), {
      connection,
      concurrency: Number(arg),
    });
    await worker.waitUntilReady();
    return;
  }
  const queue = new Queue(name, { connection });
  if (action === "push") {
    for (let i = 0; i < Number(arg); i++) await queue.add("hold", { releaseKey });
    console.log(JSON.stringify({ pushed: Number(arg) }));
  } else if (action === "count") {
    const counts = await queue.getJobCounts("wait", "paused", "prioritized", "active");
    const waiting = counts.wait + counts.paused + counts.prioritized;
    console.log(JSON.stringify({ waiting, running: counts.active }));
  } else {
    throw new Error(`unknown action ${action}`);
  }
  await queue.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
