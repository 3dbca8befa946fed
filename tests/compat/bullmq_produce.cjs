// Produces BullMQ jobs with the real library and prints the library's own counts as JSON.
// Usage: node bullmq_produce.cjs PORT QUEUE PREFIX paused|running
const { Queue } = require("bullmq");

async function main() {
  const [port, name, prefix, state] = process.argv.slice(2);
  const connection = { host: "127.0.0.1", port: Number(port) };
  const queue = new Queue(name, { connection, prefix });
  for (let i = 0; i < 5; i++) await queue.add("waiting", { i });
  for (let p = 1; p <= 3; p++) await queue.add("prioritized", { p }, { priority: p });
  for (let i = 0; i < 2; i++) await queue.add("later", { i }, { delay: 3600 * 1000 });
  for (let i = 0; i < 4; i++) await queue.add("due", { i }, { delay: 1 });
  // Without a worker nothing promotes due delayed jobs: they stay in the delayed set.
  await new Promise((resolve) => setTimeout(resolve, 50));
  if (state === "paused") await queue.pause();
  const counts = await queue.getJobCounts("wait", "paused", "prioritized", "delayed", "active");
  const waiting = await queue.count();
  console.log(JSON.stringify({ counts, count: waiting, due_delayed: 4, later_delayed: 2 }));
  await queue.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
