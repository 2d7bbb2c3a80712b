"""Where this process stands under torchrun: how many there are, whether it is the first, and how the
first shares what only it computes (reading the data, filling the caches) with the others."""

import os

import torch


def processes() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_first_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def start_processes(device: str) -> None:
    """Join torchrun's process group (gloo on CPUs, nccl on GPUs) before the data is read."""
    if processes() > 1 and not torch.distributed.is_initialized():
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if device == "cuda" else "gloo")


def on_first_process(work):
    """work() on the first process only, its result (or its error) sent to every other."""
    if processes() == 1:
        return work()
    box = [None]
    if is_first_process():
        try:
            box = [("ok", work())]
        except Exception as error:  # noqa: BLE001 - raised again on every process below
            box = [("error", error)]
    torch.distributed.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise value
    return value
