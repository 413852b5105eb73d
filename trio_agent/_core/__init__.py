"""The sans-I/O core: values and rules, with no ``await``, no I/O and no clock.

Tested synchronously, with no event loop (as h11 is).  From the bottom up:

- :mod:`.frozen` — immutable JSON values (what an event's JSON fields hold);
- :mod:`.events` — the event values and their wire codec;
- :mod:`.model` — what models speak: messages, tool specs, stream chunks, the protocol;
- :mod:`.text` — ``Text``, the string that appends in amortized O(1);
- :mod:`.state` — the reduced state of a session;
- :mod:`.reduce` — the reducer, its rule a table ``{status: {event: next status}}``;
- :mod:`.commands` — which command is legal in which state, and the events it makes;
- :mod:`.assembler` — streamed tool-call chunks in, facts about calls out;
- :mod:`.wire` — client commands parsed, event frames encoded and merged.

The public names are re-exported by :mod:`trio_agent`, :mod:`trio_agent.events` and
:mod:`trio_agent.models`; nothing here imports trio.
"""
