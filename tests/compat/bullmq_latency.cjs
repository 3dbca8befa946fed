// Adds and takes BullMQ jobs with the real library; prints how long the oldest job BullMQ
// would hand to a worker has waited, as JSON.
// Usage: node bullmq_latency.cjs PORT QUEUE PREFIX ACTION [ARG]
//   add-two GAP_MS: adds a job, waits GAP_MS, adds a prioritized job
//   delayed DELAY_MS: adds a job with that delay (no worker promotes it)
//   take: takes the next job as a worker does (Worker.getNextJob)
//   pause: pauses the queue
//   latency
// Each prints {"latency": now - min(timestamp) over getWaiting() and getPrioritized() in
// seconds (0 when none), "at": when it was measured, "delayed": [{timestamp, delay}], ...}.
const { Queue, Worker } = require("bullmq");

async function main() {
  const [port, name, prefix, action, arg] = process.argv.slice(2);
  const connection = { host: "127.0.0.1", port: Number(port) };
  const queue = new Queue(name, { connection, prefix });
  let taken = null;
  if (action === "add-two") {
    await queue.add("first", { n: 1 });
    await new Promise((resolve) => setTimeout(resolve, Number(arg)));
    await queue.add("second", { n: 2 }, { priority: 1 });
  } else if (action === "delayed") {
    await queue.add("later", { n: 3 }, { delay: Number(arg) });
  } else if (action === "take") {
    const worker = new Worker(name, null, { connection, prefix, autorun: false });
    const job = await worker.getNextJob("latency-test", { block: false });
    taken = job ? job.name : null;
    await worker.close();
  } else if (action === "pause") {
    await queue.pause();
  } else if (action !== "latency") {
    throw new Error(`unknown action ${action}`);
  }
  const waiting = [...(await queue.getWaiting()), ...(await queue.getPrioritized())];
  const delayed = (await queue.getDelayed()).map((job) => ({
    timestamp: job.timestamp,
    delay: job.delay,
  }));
  const now = Date.now();
  const oldest = Math.min(...waiting.map((job) => job.timestamp));
  const latency = waiting.length ? (now - oldest) / 1000 : 0;
  console.log(JSON.stringify({ latency, at: now / 1000, waiting: waiting.length, delayed, taken }));
  await queue.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
