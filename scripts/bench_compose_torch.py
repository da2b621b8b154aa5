"""AdapterHub's side of the `compose` bench (scripts/bench_compose.ts): the same MiniLM, three seq_bn
adapters (reduction 16) and AdapterFusion over them, the same batch, the same setups, timed the same way:
the eval forward and a training step (training-mode forward, backward from a fixed dLastHiddenState) with
what AdapterHub's train_adapter / train_adapter_fusion trains. Reads a JSON spec on stdin
{model, ids, threads, rounds, perRound}; prints {version, rows: [{setup, fwdMs, stepMs}]}.
"""
import json
import statistics
import sys
import time

import torch

import adapters
from adapters import SeqBnConfig
from adapters.composition import Average, Fuse, Parallel, Stack
from transformers import BertModel


def main():
    spec = json.loads(sys.stdin.read())
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = BertModel.from_pretrained(spec["model"], add_pooling_layer=False)
    adapters.init(model)
    for n in ("a", "b", "c"):
        model.add_adapter(n, config=SeqBnConfig(reduction_factor=16))
    model.add_adapter_fusion(Fuse("a", "b", "c"))
    ids = torch.tensor(spec["ids"])
    cases = [
        ("a", lambda: model.train_adapter("a"), 1),
        ("Stack(a, b)", lambda: model.train_adapter(Stack("a", "b")), 1),
        ("Average(a, b, c)", lambda: model.train_adapter(Average("a", "b", "c")), 1),
        ("Parallel(a, b)", lambda: model.train_adapter(Parallel("a", "b")), 2),
        ("Fuse(a, b, c)", lambda: model.train_adapter_fusion(Fuse("a", "b", "c")), 1),
    ]
    times = {name: ([], []) for name, _, _ in cases}
    H = model.config.hidden_size

    def timed(f):
        t0 = time.perf_counter()
        f()
        return 1000 * (time.perf_counter() - t0)

    for _ in range(spec["rounds"]):
        for name, activate, channels in cases:
            activate()
            d = torch.full((channels * ids.shape[0], ids.shape[1], H), 1e-3)

            def fwd():
                model.eval()
                with torch.no_grad():
                    model(input_ids=ids)

            def step():
                model.train()
                model(input_ids=ids).last_hidden_state.backward(d)
                model.zero_grad(set_to_none=True)

            fwd()
            step()
            for _ in range(spec["perRound"]):
                times[name][0].append(timed(fwd))
                times[name][1].append(timed(step))
    rows = [{"setup": n, "fwdMs": statistics.median(f), "stepMs": statistics.median(s)} for n, (f, s) in times.items()]
    print(json.dumps({"version": "torch %s, adapters %s" % (torch.__version__, adapters.__version__), "rows": rows}))


if __name__ == "__main__":
    main()
