"""The foreground node (PID 1 of a container) reaps orphans but leaves its server's exit status to Popen.

Each scenario runs in a fresh Python process: reaping in pytest's own process
could take the exit status of another test's child."""
import json
import subprocess
import sys

SCENARIO = r'''
import json, os, subprocess, time
from ctl.node import reap_orphans

def zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return False

first = reap_orphans(keep=-1)                      # no children yet
server = subprocess.Popen(["sh", "-c", "exit 3"])
orphans = [os.posix_spawnp("true", ["true"], os.environ) for _ in range(3)]
deadline = time.monotonic() + 10
while not all(zombie(p) for p in [server.pid, *orphans]) and time.monotonic() < deadline:
    time.sleep(0.01)
reaped = set()
for _ in range(5):   # the server may be first in line: its Popen collects it, as _foreground's loop does
    reaped |= set(reap_orphans(keep=server.pid))
    if reaped == set(orphans):
        break
    server.poll()
print(json.dumps({"first": first, "orphans": sorted(orphans), "reaped": sorted(reaped),
                  "zombies": [p for p in orphans if zombie(p)], "server": server.wait()}))
'''


def test_reaps_other_children_and_keeps_the_server_status():
    out = subprocess.run([sys.executable, "-c", SCENARIO], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["first"] == []
    assert result["reaped"] == result["orphans"] and len(result["orphans"]) == 3
    assert result["zombies"] == []
    assert result["server"] == 3  # not stolen: a server reaped by reap_orphans would read as 0
