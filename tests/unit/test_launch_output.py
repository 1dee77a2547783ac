"""What `--num-processes` passes on from the launcher's stderr: the workers' words, not the launcher's noise."""

import io

from llmctl.cli import _pass_on_stderr

LAUNCHER_TRACEBACK = """Traceback (most recent call last):
  File "/x/torch/distributed/elastic/agent/server/api.py", line 745, in run
torch.distributed.elastic.multiprocessing.api.SignalException: Process 1 got signal: 15

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/x/accelerate/commands/launch.py", line 1423, in <module>
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
llmctl FAILED
"""


def run(text, capsys):
    _pass_on_stderr(io.StringIO(text))
    return capsys.readouterr().err


def test_worker_lines_pass_and_launcher_noise_does_not(capsys):
    text = ("/x/accelerate/utils/launch.py:236: UserWarning: Port `29500` is already in use. Accelerate will "
            "attempt to find an open port.\n  warnings.warn(\n"
            "interrupted: stopped at step 9 (SIGTERM); checkpoint saved in c/step-9; continue with --resume\n"
            "W1122 16:49:14.307000 10143 torch/distributed/elastic/multiprocessing/api.py:1028] Sending SIGTERM\n"
            + LAUNCHER_TRACEBACK)
    assert run(text, capsys) == ("interrupted: stopped at step 9 (SIGTERM); checkpoint saved in c/step-9; "
                                 "continue with --resume\n")


def test_a_worker_traceback_is_kept(capsys):
    worker = 'Traceback (most recent call last):\n  File "/w/llmctl/train.py", line 3, in fit\nValueError: boom\n'
    assert run(worker + LAUNCHER_TRACEBACK, capsys) == worker
    ranked = "[rank1]: Traceback (most recent call last):\n[rank1]: ValueError: boom\n"
    assert run(ranked + LAUNCHER_TRACEBACK, capsys) == ranked


def test_a_launcher_failure_of_its_own_is_shown(capsys):
    own = ('Traceback (most recent call last):\n  File "/x/accelerate/commands/launch.py", line 9, in main\n'
           "FileNotFoundError: no such config file\n")
    assert run(own, capsys) == own
