"""The warm path's memo of compiled sources (node.raw_execute.CodeMemo): keyed by the source
text itself, so a lookup never trusts a hash, and it answers as the compile cache would."""

from __future__ import annotations

import pytest

from contracts import ErrorCode, ExecutionError
from node.raw_execute import CodeMemo
from sandbox.compiler import CompileCache

BUY = "def strategy(data):\n    return 'BUY'\n"
SELL = "def strategy(data):\n    return 'SELL'\n"


class _CountingCache(CompileCache):
    def __init__(self) -> None:
        super().__init__(maxsize=16)
        self.lookups = 0

    def get(self, source):
        self.lookups += 1
        return super().get(source)


def test_a_repeated_source_is_looked_up_in_the_compile_cache_once_and_counted_as_a_hit():
    cache = _CountingCache()
    memo = CodeMemo(cache)
    first = memo.get(BUY)
    again = memo.get("".join(["def strategy(data):\n", "    return 'BUY'\n"]))  # equal text, another str
    assert cache.lookups == 1
    assert first[1] is False and again[1] is True
    assert again[0] is first[0] and again[2] == first[0].to_bytes() and again[3] is True
    assert (cache.hits, cache.misses) == (1, 1)


def test_two_sources_never_share_an_entry_even_when_the_memo_is_asked_by_hash():
    memo = CodeMemo(CompileCache())
    buy, sell = memo.get(BUY), memo.get(SELL)
    assert buy[0].source_hash != sell[0].source_hash and buy[2] != sell[2]
    assert memo.get(SELL)[0] is sell[0] and memo.get(BUY)[0] is buy[0]


def test_a_source_that_does_not_compile_raises_the_compile_caches_error_every_time():
    memo = CodeMemo(CompileCache())
    for _ in range(2):
        with pytest.raises(ExecutionError) as caught:
            memo.get("import os\ndef strategy(data):\n    return os.getcwd()\n")
        assert caught.value.code in (ErrorCode.SECURITY_VIOLATION, ErrorCode.COMPILE_ERROR)


def test_a_non_str_source_is_refused_as_by_the_compile_cache():
    with pytest.raises(TypeError):
        CodeMemo(CompileCache()).get(b"def strategy(data): return 'BUY'")


def test_the_memo_is_bounded():
    memo = CodeMemo(CompileCache(maxsize=1024))
    for i in range(CodeMemo.MAX + 5):
        memo.get(f"def strategy(data):\n    return 'BUY'  # {i}\n")
    assert len(memo._entries) <= CodeMemo.MAX
