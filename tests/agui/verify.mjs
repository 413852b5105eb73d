// The official AG-UI client's inbound checks over recorded AG-UI streams.
//
//   node verify.mjs STREAM.sse ...
//
// Each file holds the raw body of one or more SSE responses of ours, concatenated (a
// run and the runs that continue it, or a stream and its rejoin).  It goes through the
// same pipeline as @ag-ui/client's HttpAgent: its SSE parser (transformHttpEventStream),
// the schema enforcement (enforceEvents, where any deviation it would only warn about is
// a failure here), chunk expansion (transformChunks), and the event verifier
// (verifyEvents): the order of runs, steps, messages, tool calls and reasoning.  Prints
// one JSON line per file, {"file", "events", "types"}, and exits 1 at the first failure.
import { readFileSync } from "node:fs";
import { Observable, lastValueFrom, toArray } from "rxjs";
import {
  enforceEvents,
  transformChunks,
  transformHttpEventStream,
  verifyEvents,
} from "@ag-ui/client";

const warnings = [];
console.warn = (...args) => warnings.push(args.join(" "));

async function check(file) {
  const body = readFileSync(file);
  // (Emitted on a later turn: transformHttpEventStream subscribes at once, before the
  // pipeline below does, as with a real response.)
  const http$ = new Observable((subscriber) => {
    setTimeout(() => emit(subscriber), 0);
  });
  const emit = (subscriber) => {
    subscriber.next({
      type: "headers",
      status: 200,
      headers: new Headers({ "content-type": "text/event-stream" }),
    });
    // In pieces, as a network delivers it: the parser must join messages across reads.
    for (let i = 0; i < body.length; i += 1000) {
      subscriber.next({ type: "data", data: new Uint8Array(body.subarray(i, i + 1000)) });
    }
    subscriber.complete();
  };
  const events = await lastValueFrom(
    transformHttpEventStream(http$).pipe(
      enforceEvents(),
      transformChunks(),
      verifyEvents(),
      toArray(),
    ),
  );
  if (warnings.length) throw new Error(`warnings: ${warnings.join("; ")}`);
  return { file, events: events.length, types: events.map((e) => e.type) };
}

for (const file of process.argv.slice(2)) {
  try {
    console.log(JSON.stringify(await check(file)));
  } catch (err) {
    console.log(JSON.stringify({ file, error: String(err && err.message ? err.message : err) }));
    process.exit(1);
  }
}
