// An end-to-end encrypted runner for the browser tests (clients/js RunnerClient): prints its
// code and what it receives as JSON lines, and answers every line an app types (up to Enter)
// with "got: <line>", encrypted; the line "count" is also answered with n-1 ... n-40, one every
// 100 ms. argv[2]: {"url", "runnerId"}.
import { RunnerClient } from "../../../clients/js/src/index.js";

const config = JSON.parse(process.argv[2] ?? "{}");
const out = (fields) => process.stdout.write(JSON.stringify(fields) + "\n");
const decoder = new TextDecoder();
const lines = new Map();

const runner = new RunnerClient({ url: config.url, runnerId: config.runnerId });
runner.on("code", (code) => out({ code }));
runner.on("session", (app) => out({ session: app }));
runner.on("rejected", (app, message) => out({ rejected: String(message) }));
runner.on("resize", (app, cols, rows) => out({ resize: [cols, rows] }));
runner.on("data", (app, bytes) => {
  const text = (lines.get(app) ?? "") + decoder.decode(bytes);
  const parts = text.split("\r");
  lines.set(app, parts.pop());
  for (const line of parts) {
    out({ line });
    runner.send(app, `\r\ngot: ${line}\r\n`);
    if (line === "count") {
      let i = 0;
      const timer = setInterval(() => {
        i += 1;
        runner.send(app, `n-${i}\r\n`);
        if (i === 40) clearInterval(timer);
      }, 100);
    }
  }
});
runner.on("error", (err) => out({ error: String(err?.message ?? err) }));
await runner.connect();
process.on("SIGTERM", () => {
  runner.close();
  process.exit(0);
});
