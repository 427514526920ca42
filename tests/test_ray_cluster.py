"""A two-node Ray cluster on this machine (`ray start --head` and a second `ray start --address`,
each with one CPU of its own): the runner's stages run on both nodes."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
RAY = str(Path(sys.executable).parent / "ray")
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # a cluster of this machine alone: no token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_start(*args):
    """`ray start` for one node of one CPU, its agents on ports of its own."""
    ports = {flag: str(free_port()) for flag in (
        "--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")}
    proc = subprocess.run([RAY, "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                           "--object-store-memory", str(200 << 20), "--disable-usage-stats",
                           *[x for kv in ports.items() for x in kv]],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stages_run_on_both_nodes_of_a_two_node_cluster(tmp_path):
    port = free_port()
    try:
        ray_start("--head", "--port", str(port), "--include-dashboard", "false")
        ray_start("--address", f"127.0.0.1:{port}")
        # four stages of two seconds on two one-CPU nodes: both nodes must take some
        script = textwrap.dedent(f"""
            import sys
            sys.path[:0] = [{str(HERE.parent)!r}, {str(HERE)!r}]
            import ray
            import toy_stages as toy
            from synthgap.runner import dag
            from synthgap.runner.run import Execution, run
            ray.init(address="127.0.0.1:{port}", runtime_env={{"env_vars": {{
                "PYTHONPATH": {str(HERE)!r} + ":" + {str(HERE.parent)!r}}}}})
            from synthgap.runner.workspace import Workspace
            stages = {{f"sleep/{{i}}": dag.Stage(f"sleep/{{i}}", toy.sleeper, {{
                "pid_file": {str(tmp_path)!r} + f"/{{i}}.pid", "seconds": 2}}) for i in range(4)}}
            ws = Workspace({str(tmp_path / "ws")!r})
            run(stages, ws, dag.Context(device="cpu"), dag.plan(stages, ws, None, None),
                Execution("ray", address="127.0.0.1:{port}"))
        """)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=300, env=ENV)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=ENV)
    metas = [json.loads(p.read_text()) for p in (tmp_path / "ws").glob("cache/*/*/meta.json")]
    table = {m["name"]: m["node"]["id"][:12] for m in metas}
    print("stage -> node:", table)
    assert len(table) == 4 and len(set(table.values())) == 2, table
