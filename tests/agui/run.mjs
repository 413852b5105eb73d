// The official AG-UI client, HttpAgent, against a live server of ours.
//
//   node run.mjs BASE_URL THREAD_ID MESSAGE [DECISION ...]
//
// One user message, then as many runs as the server's interrupts ask for: each answered
// with the next DECISION (`approve`, or `deny:REASON`) through the client's own
// buildResumeArray.  The client runs its whole inbound pipeline (SSE parser, schema
// enforcement, chunk expansion, verifyEvents, its reducer); any failure is an error.
// Prints one JSON line: the runs' outcomes and the client's messages at the end.
import { HttpAgent, buildResumeArray } from "@ag-ui/client";

const [base, threadId, text, ...decisions] = process.argv.slice(2);
const warnings = [];
console.warn = (...args) => warnings.push(args.join(" "));

const agent = new HttpAgent({ url: `${base}/agui`, threadId });
agent.addMessage({ id: "u1", role: "user", content: text });
const outcomes = [];
const subscriber = {
  onRunFinishedEvent: ({ outcome }) => { outcomes.push(outcome); },
  onRunErrorEvent: ({ event }) => { outcomes.push(`error: ${event.message}`); },
};
try {
  let n = 1;
  await agent.runAgent({ runId: `run-${n}` }, subscriber);
  while (agent.pendingInterrupts.length) {
    const answers = {};
    for (const interrupt of agent.pendingInterrupts) {
      const decision = decisions.shift() || "approve";
      answers[interrupt.id] = decision === "approve"
        ? { status: "resolved", payload: { approved: true } }
        : { status: "resolved", payload: { approved: false, reason: decision.slice(5) } };
    }
    n += 1;
    const resume = buildResumeArray(agent.pendingInterrupts, answers);
    await agent.runAgent({ runId: `run-${n}`, resume }, subscriber);
  }
  if (warnings.length) throw new Error(`warnings: ${warnings.join("; ")}`);
  const messages = agent.messages.map((m) => ({
    role: m.role,
    content: m.content ?? null,
    toolCalls: (m.toolCalls || []).map((c) => c.id),
    toolCallId: m.toolCallId ?? null,
  }));
  console.log(JSON.stringify({ outcomes, messages }));
} catch (err) {
  console.log(JSON.stringify({ error: String(err && err.message ? err.message : err), outcomes }));
  process.exit(1);
}
