"""Train the embedded demo model: a 1-layer GRU (H=32) with a last-step Linear head on the gesture data.

Reads grukit/data/demo_train.npz and demo_val.npz (make them with examples/make_demo_data.py), trains on
the CPU in a few seconds, prints the validation accuracy and writes grukit/data/demo_model.onnx (single
file, TorchScript exporter, batch and time axes dynamic) and the training facts into grukit/data/demo.json.
Run:  python examples/train_demo.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

SEED = 0
HIDDEN = 32
EPOCHS = 40
BATCH = 32
LEARNING_RATE = 1e-2
THREADS = 2
OPSET = 17

DATA_DIR = Path(__file__).resolve().parent.parent / "grukit" / "data"


class GestureGRU(nn.Module):
    """x [N, T, 3] -> logits [N, classes] from the GRU's last step."""

    def __init__(self, inputs: int, hidden: int, classes: int):
        super().__init__()
        self.gru = nn.GRU(inputs, hidden, num_layers=1, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(out[:, -1])


def accuracy(module: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    module.eval()
    with torch.no_grad():
        pred = module(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float(np.mean(pred == y))


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    train, val = np.load(DATA_DIR / "demo_train.npz"), np.load(DATA_DIR / "demo_val.npz")
    x_train, y_train = train["x"], train["y"]
    x_val, y_val = val["x"], val["y"]
    classes = int(y_train.max()) + 1
    module = GestureGRU(x_train.shape[2], HIDDEN, classes)
    optimizer = torch.optim.Adam(module.parameters(), lr=LEARNING_RATE)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(SEED)
    start = time.perf_counter()
    for epoch in range(EPOCHS):
        module.train()
        order = torch.randperm(len(xt), generator=generator)
        for i in range(0, len(xt), BATCH):
            idx = order[i : i + BATCH]
            optimizer.zero_grad()
            loss = loss_fn(module(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
        scheduler.step()
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1}: loss {loss.item():.4f}, val accuracy {accuracy(module, x_val, y_val):.4f}")
    seconds = time.perf_counter() - start
    val_accuracy = accuracy(module, x_val, y_val)
    print(f"trained in {seconds:.1f} s; float val accuracy {val_accuracy:.4f}")

    module.eval()
    path = DATA_DIR / "demo_model.onnx"
    torch.onnx.export(
        module,
        (torch.from_numpy(x_val[:1]),),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch", 1: "time"}, "logits": {0: "batch"}},
    )
    print(f"{path.name}: {path.stat().st_size:,} bytes")

    info_path = DATA_DIR / "demo.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info["model"] = {
        "script": "examples/train_demo.py", "seed": SEED, "hidden_size": HIDDEN, "num_layers": 1,
        "epochs": EPOCHS, "batch": BATCH, "learning_rate": LEARNING_RATE, "opset": OPSET,
        "torch_version": torch.__version__, "float_val_accuracy": round(val_accuracy, 6),
    }
    info_path.write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
