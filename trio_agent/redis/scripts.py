"""The Lua scripts sessions on Redis run: each one atomic on the server."""

from __future__ import annotations

from typing import Final

__all__ = ["APPEND", "RELEASE", "RENEW", "REPLY"]

APPEND: Final = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('NOTOWNER this process does not hold the lease of the session')
end
local last = 0
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then last = tonumber(string.match(top[1][1], '^(%d+)')) end
local first = tonumber(ARGV[3])
if first > last + 1 then
  return redis.error_reply('SEQGAP the log ends at seq ' .. last ..
    ' but the batch starts at seq ' .. first)
end
for i = 4, #ARGV do
  local seq = first + i - 4
  if seq > last then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], string.format('%d-0', seq), 'e', ARGV[i])
  end
end
return first + #ARGV - 4
"""
"""Append a batch (idempotent: seqs already there are skipped, so a batch whose reply
was lost can be sent again), fenced by the lease and by the seq."""

RENEW: Final = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
"""Renew the lease (or take it back if it expired and nobody else took it)."""

REPLY: Final = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
"""A forwarded command's verdict, for its forwarder's ``BLPOP``; gone after
``REPLY_TTL`` if nobody collects it (one script: never a verdict without expiry)."""

RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
