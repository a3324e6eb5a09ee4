"""Long work that loses nothing and trusts no file: `afp evaluate --resume` after a kill, locks on run folders,
and reading what a pickle would run without running it.

In the style of tests/test_faults.py: each fault is made for real where a test can (a SIGTERM sent from outside at a
known progress line, a second process started on the same folder) and injected at one place otherwise (an error at
the k-th cell); every case asserts the exit code, the one line on stderr and what is on disk afterwards, and where a
run goes on, that it ends with the uninterrupted run's comparison, values and p-values.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from afp_cli.pickle_check import pickle_globals, unsafe_globals


class _RunsCode:
    def __reduce__(self):
        return exec, ("raise SystemExit('ran')",)


# ------------------------------------------------------------------------------------------- pickles read, not run


def test_the_globals_of_every_protocol_are_read_without_loading(tmp_path):
    for protocol in (2, 4, 5):  # torch.save writes 2; pickle.dump's default (5) names globals with STACK_GLOBAL
        data = pickle.dumps({"state": [1, 2.0, "x"], "evil": _RunsCode(), "path": Path("a")}, protocol=protocol)
        assert pickle_globals(data) == ["builtins.exec", "pathlib.PosixPath"], protocol
        (tmp_path / f"p{protocol}.pkl").write_bytes(data)
        assert unsafe_globals(tmp_path / f"p{protocol}.pkl") == ["builtins.exec", "pathlib.PosixPath"]
        assert unsafe_globals(tmp_path / f"p{protocol}.pkl", engine=True) == ["builtins.exec"]


def test_torch_files_are_judged_as_weights_only_loading_would_judge_them(tmp_path):
    import numpy as np

    torch.save({"weights": torch.ones(2), "steps": [1, (2, 3)], "name": "adam"}, tmp_path / "plain.pt")
    torch.save({"numpy": np.random.RandomState(0).get_state()}, tmp_path / "numpy.pt")
    torch.save({"evil": _RunsCode()}, tmp_path / "evil.pt")
    (tmp_path / "shard.bin").write_bytes(b"\x00\x01raw tensor bytes")
    assert unsafe_globals(tmp_path / "plain.pt") == [] and unsafe_globals(tmp_path / "shard.bin") == []
    assert sorted(unsafe_globals(tmp_path / "numpy.pt")) != []  # weights_only refuses numpy arrays
    assert unsafe_globals(tmp_path / "numpy.pt", engine=True) == []  # accelerate's saved random state
    assert unsafe_globals(tmp_path / "evil.pt", engine=True) == ["builtins.exec"]


def test_a_pickle_that_computes_its_global_names_counts_as_unsafe():
    # STACK_GLOBAL whose module name is not a literal pushed just before: built at load time, so unreadable
    data = b"\x80\x04\x8c\x08builtins\x94\x8c\x04exec\x94\x85\x94R\x94\x8c\x04exec\x94\x93\x94."
    assert pickle_globals(data) == ["<a global the file builds at load time>"]
