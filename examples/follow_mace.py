"""Follow mace_run_train's output: every line to a log file, a compact line per epoch to the terminal.

    mace_run_train ... 2>&1 | python -u examples/follow_mace.py LOGFILE

mace logs a great deal (its set-up, the model, every statistic); the terminal gets only the lines a
user watches (each epoch's validation errors, the E0 estimate and refits, the end), each with the
seconds since this started, and, whenever mace has been silent for a while, one line saying it is
still running and what it last did. The full output stays in LOGFILE.
"""

import queue
import re
import sys
import threading
import time

SILENCE_S = 8  # well below the 15 s the terminal may stay silent: python and the machine add their delays
SHOWN = re.compile(r"^(Initial|Epoch \d+): |E0 re-estimation for head|E0 refit, |^RMSE of E per atom|"
                   r"^rank \d+ / |Training complete|Saving model to|Computing metrics for|Traceback|Error: |error: ")
PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \w+: ")  # mace's "2026-01-01 12:00:00.000 INFO: "
ERRORS = re.compile(r"^(Initial|Epoch \d+): head: (\S+), loss=\s*\S+, RMSE_E_per_atom=\s*(\S+) meV, "
                    r"RMSE_F=\s*(\S+) meV / A")
LAST_WORDS = 70  # characters of mace's last line shown in a "still running" line


def compact(message: str) -> str:
    """An epoch's validation line as 'epoch 3: E 4.1 meV/atom, F 52.3 meV/A'; any other line as it is."""
    errors = ERRORS.match(message)
    if errors:
        when, _, energy, forces = errors.groups()
        return f"{when.lower()}: validation E {energy} meV/atom, F {forces} meV/A"
    return message


def read_lines(stream, lines: "queue.Queue") -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def main(log_path: str) -> None:
    start = time.monotonic()
    lines: "queue.Queue" = queue.Queue()
    threading.Thread(target=read_lines, args=(sys.stdin, lines), daemon=True).start()
    last_message, last_shown = "starting", start
    with open(log_path, "w") as log:
        while True:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                now = time.monotonic()
                if now - last_shown >= SILENCE_S:
                    print(f"  [{now - start:4.0f} s] ... still running; last: {last_message[:LAST_WORDS]}", flush=True)
                    last_shown = now
                continue
            if line is None:
                return
            log.write(line)
            log.flush()
            # a progress bar (tqdm) rewrites its line with carriage returns: what counts is the last part
            message = PREFIX.sub("", line.rstrip("\n").split("\r")[-1])
            if message.strip():
                last_message = message.strip()
            if SHOWN.search(message):
                now = time.monotonic()
                print(f"  [{now - start:4.0f} s] {compact(message)}", flush=True)
                last_shown = now


if __name__ == "__main__":
    main(sys.argv[1])
