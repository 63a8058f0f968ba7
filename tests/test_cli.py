import subprocess
import sys

import pytest

from scalelab import __version__
from scalelab.cli.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "scalelab" in capsys.readouterr().out


def test_unknown_subcommand_is_one_line_exit_2(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "scalelab.cli.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("scalelab ")
