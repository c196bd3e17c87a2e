import os, subprocess, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench.polls as polls
import wfapp.queue as wq
orig = polls.time_processing
state = {}
orig_kick = wq.RedisQueue.kick
def kick(self, force=False):
    if state.get("pids") and not state.get("spies"):
        r, pids = state["round"], state["pids"]
        state["spies"] = [subprocess.Popen([sys.prefix + "/bin/py-spy", "record", "--gil", "--nonblocking", "-r", "200", "-d", "2", "-f", "raw", "-o", f"/tmp/exp/poll{r}-{i}.txt", "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i, pid in enumerate(pids)]
    return orig_kick(self, force)
wq.RedisQueue.kick = kick
def spied(args, round_no, pids):
    state.update(round=round_no, pids=pids, spies=None)
    try:
        return orig(args, round_no, pids)
    finally:
        [s.wait() for s in state["spies"] or []]
        state["pids"] = None
polls.time_processing = spied
polls.main()
