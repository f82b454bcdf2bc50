"""ClientApp = one user's device. It holds only that user's noisy audio and its own student; it never sees clean speech.

Message types it answers (the server's strategies decide which it sends):

- ``query.hello``   -> which user this device carries (Flower partition id -> user id of the run)
- ``train.upload``  -> the requested noisy chunks, encoded (FLAC or Opus)
- ``train.adapt``   -> fine-tune the persistent student with ``distill.adapt`` on pseudo-targets that arrived in the
  message (pseudo_targets) or that the device computes with its cached teacher (teacher_weights); with
  ``adapt.guard`` the fine-tuned student is kept only if the guard finds it no worse than the generic one
- ``train.install`` -> replace the student with weights from the server (cloud_student, oracle_clean)
- ``train.share``   -> the student's weight delta from the generic student (fedavg_generic, after the last round)

Every request carries a ``task`` ConfigRecord with the run directory (where the device finds the run's config and
its own storage), the user id it is meant for and the round. Replies carry a ``device`` MetricRecord: wall time,
MACs spent and the bytes the device received.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedpse.audio.io import SAMPLE_RATE
from fedpse.distill.adapt import adapt
from fedpse.distill.cache import ResultCache, model_key
from fedpse.distill.guard import TeacherCheck
from fedpse.federation.device import Device, generic_student
from fedpse.federation.payloads import (
    content_bytes,
    decode_files,
    decode_targets,
    decode_weights,
    encode_audio,
    encode_weights,
    guard_metrics,
)
from fedpse.federation.plan import RunPlan
from fedpse.models.accelerator import client_device, release_memory
from fedpse.models.macs import forward_macs

app = ClientApp()


@lru_cache(maxsize=8)
def _plan(run_dir: str, mtime: float) -> RunPlan:
    """The run's plan, read once per actor process (world manifest included)."""
    return RunPlan.load(run_dir)


def plan_for(task: ConfigRecord) -> RunPlan:
    run_dir = str(task["run_dir"])
    config = Path(run_dir) / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: the device cannot find the run's config (is the run dir shared?)")
    return _plan(run_dir, config.stat().st_mtime)


def names(task: ConfigRecord, key: str) -> list[str]:
    """A list of chunk names from the task (absent = empty: Flower cannot carry empty lists)."""
    return [str(n) for n in task[key]] if key in task else []


def _device(message: Message, context: Context) -> Device:
    """The device this message reached; refuses a message meant for another user."""
    torch.set_num_threads(1)  # one core per client actor
    task = message.content["task"]
    plan = plan_for(task)
    user = plan.user_for_partition(int(context.node_config["partition-id"]))
    if user is None or user != task["user"]:
        raise RuntimeError(f"message for user {task['user']} reached the device of {user}")
    if user in plan.cfg.federation.fail_users:
        raise RuntimeError(f"injected device failure on {user} (federation.fail_users)")
    # federation.faults: an injected crash (any message of the round) or dropout (its training message)
    plan.fleet.inject(user, int(task["round"]), message.metadata.message_type)
    return Device(plan, user)


def _reply(message: Message, started: float, records: dict | None = None, **metrics: float) -> Message:
    device = MetricRecord(
        {
            "wall_seconds": time.perf_counter() - started,
            "bytes_received": content_bytes(message.content),
            **{k: float(v) for k, v in metrics.items()},
        }
    )
    return Message(RecordDict({**(records or {}), "device": device}), reply_to=message)


@app.query("hello")
def hello(message: Message, context: Context) -> Message:
    """Registration: tell the server which user this device carries (or that it is a spare device)."""
    plan = plan_for(message.content["task"])
    user = plan.user_for_partition(int(context.node_config["partition-id"]))
    # Flower cannot count the bytes of an empty string, so a spare device says so with a flag instead.
    device = ConfigRecord({"user": user} if user else {"spare": True})
    return Message(RecordDict({"device": device}), reply_to=message)


@app.train("upload")
def upload(message: Message, context: Context) -> Message:
    """Send the requested noisy chunks (only noisy audio exists on a device)."""
    started = time.perf_counter()
    device = _device(message, context)
    task = message.content["task"]
    fed = device.plan.cfg.federation
    chunks = {name: device.audio.chunk(name) for name in names(task, "upload")}
    audio = encode_audio(chunks, str(task["codec"]), fed.lossy_compression)
    return _reply(message, started, {"audio": audio})


@app.train("adapt")
def adapt_student(message: Message, context: Context) -> Message:
    """Fine-tune the device's student on the chunks named in the task, then keep it for the next round."""
    started = time.perf_counter()
    device = _device(message, context)
    task, content = message.content["task"], message.content
    round_number = int(task["round"])
    if "targets" in content.array_records:  # pseudo_targets: the server's teacher outputs arrived
        device.store_targets(decode_targets(content["targets"]))
    if (
        "teacher" in content.array_records and "teacher_onnx" in task
    ):  # teacher_weights: an ONNX teacher's files
        device.store_onnx_teacher(json.loads(str(task["teacher_onnx"])), decode_files(content["teacher"]))
    elif "teacher" in content.array_records:  # teacher_weights: the one-time teacher download
        device.store_teacher(json.loads(str(task["teacher_spec"])), decode_weights(content["teacher"]))
    train_on = names(task, "train_on")
    compute = client_device(device.plan.cfg)  # the GPU Ray assigned this actor (num_gpus > 0), else the CPU
    teacher_macs = 0.0
    missing = [n for n in train_on if not device.has_targets(n)]
    if missing and task.get("targets_from") == "device_teacher":
        teacher = device.teacher().to(compute)
        noisy = [device.audio.chunk(n) for n in missing]
        outputs = ResultCache(device.plan.cfg.federation.cache_dir).targets(
            teacher, model_key(teacher), noisy, user=device.user_id
        )
        device.store_targets(dict(zip(missing, outputs, strict=True)))
        teacher_macs = forward_macs(teacher, sum(len(x) for x in noisy) / SAMPLE_RATE)
    noisy = [device.audio.chunk(n) for n in train_on]
    student = device.student().to(compute)
    adapt_cfg = device.plan.round_adapt()
    # the guard compares with the generic student the device started with, whatever earlier rounds made of it
    generic = generic_student(device.plan).to(compute) if adapt_cfg.guard != "off" else None
    result = adapt(
        student,
        noisy,
        device.targets(train_on),
        adapt_cfg,
        seed=device.plan.adapt_seed(device.user_id, round_number),
        user=device.user_id,
        generic=generic,
        teacher=_checked_teacher(device, task, adapt_cfg.guard, compute),
    )
    device.save_student(student, round_number)  # written from CPU tensors
    if result.guard != "off":
        device.keep_unguarded(result.finetuned_state, round_number)
    release_memory(compute)  # an idle actor keeps only its CUDA context
    return _reply(
        message,
        started,
        device_macs=result.device_macs + teacher_macs,
        teacher_macs=teacher_macs,
        steps=result.steps,
        train_audio_seconds=result.train_audio_seconds,
        adapt_audio_seconds=sum(len(x) for x in noisy) / SAMPLE_RATE,
        adapt_wall_seconds=result.wall_seconds,
        **guard_metrics(result.guard_columns()),
    )


def _checked_teacher(device: Device, task: ConfigRecord, guard: str, compute: torch.device):
    """What the guard (``adapt.guard=on``) checks the teacher with: the device's own teacher (teacher_weights), or
    the check the server made and sent (pseudo_targets); None otherwise (guard=dnsmos checks the pseudo-targets)."""
    if guard != "on":
        return None
    if task.get("targets_from") == "device_teacher":
        return device.teacher().to(compute)
    if "guard_teacher_db" in task:
        return TeacherCheck(float(task["guard_generic_db"]), float(task["guard_teacher_db"]))
    return None


@app.train("install")
def install(message: Message, context: Context) -> Message:
    """Replace the device's student with the weights the server fine-tuned for this user."""
    started = time.perf_counter()
    device = _device(message, context)
    record: ArrayRecord = message.content["student"]
    device.install_student(decode_weights(record), int(message.content["task"]["round"]))
    return _reply(message, started)


@app.train("share")
def share(message: Message, context: Context) -> Message:
    """Send the student's weight delta from the generic student (fedavg_generic), at the requested precision."""
    started = time.perf_counter()
    device = _device(message, context)
    if not device.student_path.is_file():
        raise RuntimeError(f"device {device.user_id}: asked to share a delta before its student ever adapted")
    student, generic = device.student().state_dict(), generic_student(device.plan).state_dict()
    delta = {k: student[k] - generic[k] for k in generic if generic[k].is_floating_point()}
    record = encode_weights(delta, str(message.content["task"]["precision"]))
    return _reply(message, started, {"delta": record})
