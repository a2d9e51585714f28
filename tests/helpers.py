"""Small random IR graphs built by hand, as a CNN importer would produce them, for the tests.

Every builder takes a ``dtype`` and a seed and returns a :class:`spkeras.ir.Graph` whose node
shapes are the true output shapes (channels-first, batch axis omitted). Weights are random; they
are scaled so that activations stay of order one and most ReLUs are active on some images.
"""

from __future__ import annotations

import pytest
import torch

from spkeras.ir import Graph, Node
from spkeras.ops import run_graph


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run a module's tests on one intra-op thread: these tensors are tiny, and with several
    threads on a busy 2-core machine each small conv can take milliseconds of spin-waiting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _normal(g, shape, std, dtype):
    return (torch.randn(shape, generator=g, dtype=torch.float64) * std).to(dtype)


def _uniform(g, shape, low, high, dtype):
    return (torch.rand(shape, generator=g, dtype=torch.float64) * (high - low) + low).to(dtype)


def conv(name, inputs, in_ch, out_ch, k, stride, padding, g, dtype, bias=True, positive=False, scale=1.0):
    """A conv2d node with He-like random weights (or non-negative ones when ``positive``)."""
    fan_in = in_ch * k * k
    if positive:
        weight = _uniform(g, (out_ch, in_ch, k, k), 0.0, 2.0 * scale / fan_in, dtype)
    else:
        weight = _normal(g, (out_ch, in_ch, k, k), scale * (2.0 / fan_in) ** 0.5, dtype)
    params = {"weight": weight}
    if bias:
        params["bias"] = _uniform(g, (out_ch,), 0.0, 0.05 * scale, dtype) if positive else _normal(g, (out_ch,), 0.1, dtype)
    return Node(name, "conv2d", list(inputs), params, {"stride": tuple(stride), "padding": tuple(padding)})


def dense(name, inputs, n_in, n_out, g, dtype, bias=True, positive=False, scale=1.0):
    if positive:
        weight = _uniform(g, (n_out, n_in), 0.0, 2.0 * scale / n_in, dtype)
    else:
        weight = _normal(g, (n_out, n_in), scale * (2.0 / n_in) ** 0.5, dtype)
    params = {"weight": weight}
    if bias:
        params["bias"] = _uniform(g, (n_out,), 0.0, 0.05 * scale, dtype) if positive else _normal(g, (n_out,), 0.1, dtype)
    return Node(name, "dense", list(inputs), params, {})


def batchnorm(name, inputs, channels, g, dtype, eps=1e-3, tiny_var=False):
    params = {
        "gamma": _uniform(g, (channels,), 0.5, 1.5, dtype),
        "beta": _normal(g, (channels,), 0.2, dtype),
        "mean": _normal(g, (channels,), 0.2, dtype),
        "var": _uniform(g, (channels,), 1e-4, 5e-4, dtype) if tiny_var else _uniform(g, (channels,), 0.5, 2.0, dtype),
    }
    return Node(name, "batchnorm", list(inputs), params, {"eps": eps})


def op(name, kind, inputs, **attrs):
    return Node(name, kind, list(inputs), {}, dict(attrs))


def finish(nodes: list[Node], output: str, input_shape: tuple[int, ...], name: str = "model") -> Graph:
    """Set every node's shape from a forward pass and return the graph."""
    nodes[0].shape = tuple(input_shape)
    graph = Graph(nodes=nodes, output=output, name=name)
    dtype = next((p.dtype for n in nodes for p in n.params.values()), torch.float32)

    def observe(node, value):
        node.shape = tuple(value.shape[1:])

    with torch.no_grad():
        run_graph(graph, torch.zeros((1, *input_shape), dtype=dtype), observe=observe)
    for node in nodes:
        node.source = f"{node.name} ({node.op})"
    return graph


def centre_logits(graph: Graph, n: int = 64, seed: int = 100) -> Graph:
    """Shift the last layer's bias so that every class's mean output over random images is zero,
    so that different images get different predictions (a random net tends to favour one class)."""
    last = graph.node(graph.output)
    if last.op == "softmax":
        last = graph.node(last.inputs[0])
    x = images(graph, n, seed=seed, dtype=last.params["weight"].dtype)
    stop = last.name

    def observe(node, value):
        if node.name == stop:
            observe.logits = value

    with torch.no_grad():
        run_graph(graph, x.to(last.params["weight"].dtype), observe=observe)
    last.params["bias"] = last.params["bias"] - observe.logits.mean(0)
    return graph


def chain_cnn(dtype=torch.float64, seed=0, bn=True, conv_bias=True, positive=False, scale=1.0, channels=2,
              size=9, softmax=True, conv2_padding=(1, 1, 1, 1), centred=True, tiny_var=False) -> Graph:
    """(a) conv(pad [0,1,0,1], stride 2) → BN → relu → avgpool → conv('same') → relu → flatten → dense → relu
    → dense → softmax. ``conv2_padding=(0, 0, 0, 0)`` makes the second conv 'valid' (use size ≥ 13)."""
    g = _gen(seed)
    c1, c2 = 4, 5
    h = (size + 1 - 3) // 2 + 1      # after the strided conv
    p = h // 2                       # after the 2×2 average pool
    top, bottom, left, right = conv2_padding
    q = p + top + bottom - 2         # after the second conv (3×3, stride 1)
    nodes = [
        Node("input", "input"),
        conv("conv1", ["input"], channels, c1, 3, (2, 2), (0, 1, 0, 1), g, dtype, bias=conv_bias, positive=positive,
             scale=scale),
    ]
    last = "conv1"
    if bn:
        nodes.append(batchnorm("bn1", ["conv1"], c1, g, dtype, tiny_var=tiny_var))
        last = "bn1"
        if positive:  # a non-negative affine map, so that every current stays non-negative
            nodes[-1].params["mean"] = torch.zeros_like(nodes[-1].params["mean"])
            nodes[-1].params["beta"] = nodes[-1].params["beta"].abs()
    nodes += [
        op("relu1", "relu", [last]),
        op("pool1", "avgpool", ["relu1"], kernel=(2, 2), stride=(2, 2)),
        conv("conv2", ["pool1"], c1, c2, 3, (1, 1), conv2_padding, g, dtype, positive=positive, scale=scale),
        op("relu2", "relu", ["conv2"]),
        op("flatten", "flatten", ["relu2"]),
        dense("fc1", ["flatten"], c2 * q * (p + left + right - 2), 12, g, dtype, positive=positive, scale=scale),
        op("relu3", "relu", ["fc1"]),
        dense("fc2", ["relu3"], 12, 4, g, dtype, positive=positive, scale=scale),
    ]
    output = "fc2"
    if softmax:
        nodes.append(op("softmax", "softmax", ["fc2"]))
        output = "softmax"
    graph = finish(nodes, output, (channels, size, size), name="chain")
    return centre_logits(graph) if centred and not positive else graph


def residual_cnn(dtype=torch.float64, seed=0, channels=2, size=6, positive=False, scale=1.0, branch=1) -> Graph:
    """(b) conv → relu → conv → BN → add(with the relu output) → relu → global_avgpool → dense.

    ``branch=2`` puts conv → relu before the BN'd conv, so that the add sums two different
    spiking populations (their λ differ, and so must the add's coefficients after conversion).
    """
    g = _gen(seed)
    c = 3
    nodes = [
        Node("input", "input"),
        conv("conv1", ["input"], channels, c, 3, (1, 1), (1, 1, 1, 1), g, dtype, positive=positive, scale=scale),
        op("relu1", "relu", ["conv1"]),
    ]
    last = "relu1"
    if branch == 2:
        nodes += [
            conv("conv1b", ["relu1"], c, c, 3, (1, 1), (1, 1, 1, 1), g, dtype, positive=positive, scale=scale),
            op("relu1b", "relu", ["conv1b"]),
        ]
        last = "relu1b"
    nodes += [
        conv("conv2", [last], c, c, 3, (1, 1), (1, 1, 1, 1), g, dtype, positive=positive, scale=scale),
        batchnorm("bn2", ["conv2"], c, g, dtype),
        op("add", "add", ["bn2", "relu1"]),
        op("relu2", "relu", ["add"]),
        op("gap", "global_avgpool", ["relu2"]),
        dense("fc", ["gap"], c, 4, g, dtype, positive=positive, scale=scale),
    ]
    if positive:  # keep the BN a non-negative affine map so that every current stays non-negative
        bn = next(n for n in nodes if n.op == "batchnorm").params
        bn["mean"] = torch.zeros_like(bn["mean"])
        bn["beta"] = bn["beta"].abs()
    graph = finish(nodes, "fc", (channels, size, size), name="residual")
    return graph if positive else centre_logits(graph)


def mlp(dtype=torch.float64, seed=0, sizes=(12, 10, 8, 3), positive=False, scale=1.0, bn=False, bias=True,
        centred=True) -> Graph:
    """(c) A dense-only MLP on flat inputs: dense (→ BN) → relu → … → dense."""
    g = _gen(seed)
    nodes = [Node("input", "input")]
    last = "input"
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        nodes.append(dense(f"fc{k}", [last], n_in, n_out, g, dtype, bias=bias, positive=positive, scale=scale))
        last = f"fc{k}"
        if k < len(sizes) - 1:
            if bn:
                nodes.append(batchnorm(f"bn{k}", [last], n_out, g, dtype))
                last = f"bn{k}"
            nodes.append(op(f"relu{k}", "relu", [last]))
            last = f"relu{k}"
    graph = finish(nodes, last, (sizes[0],), name="mlp")
    return centre_logits(graph) if centred and bias and not positive else graph


def images(graph: Graph, n: int, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    """Random inputs in [0, 1] of the graph's input shape, a few pixels exactly 0 or 1."""
    x = torch.rand((n, *graph.input.shape), generator=_gen(seed), dtype=torch.float64)
    x[x < 0.05] = 0.0
    x[x > 0.95] = 1.0
    return x.to(dtype)


def algorithm1_counts(x: torch.Tensor, kappa0: float, steps: int) -> torch.Tensor:
    """Spike counts of Algorithm 1 after ``steps`` steps, written out literally (float64)."""
    x = x.double()
    v = torch.zeros_like(x)
    count = torch.zeros_like(x)
    for _ in range(steps):
        v = v + kappa0 * x
        fired = v > kappa0
        v = torch.where(fired, v - kappa0, v)
        count += fired.double()
    return count


def randomize_keras(model, seed: int = 0, kernel_gain: float = 1.0, bias_mean: float = 0.0,
                    bias_std: float = 0.3) -> None:
    """Give every variable of a Keras model random values of sensible size, BN statistics included."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape, path = tuple(variable.shape), variable.path
        if path.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        elif path.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif path.endswith("kernel"):
            value = rng.normal(0.0, kernel_gain / np.sqrt(np.prod(shape[:-1])), shape)
        else:  # bias, beta, moving_mean
            value = rng.normal(bias_mean, bias_std, shape)
        variable.assign(value.astype(np.float32))


def simulate_counting(net, images, timesteps, **options):
    """simulate() with a NeuronCounts recorder on every source layer; the record gains
    ``neuron_counts`` (name → (N, *shape) counts)."""
    from spkeras.metrics import source_layers
    from spkeras.simulate import NeuronCounts, simulate

    counts = NeuronCounts(source_layers(net.graph))
    record = simulate(net, images, timesteps, [counts], **options)
    record.neuron_counts = counts.totals
    return record


def maxpool_cnn(dtype=torch.float64, seed=0, size=9, cap=1.0) -> Graph:
    """(d) Real-world layers, part 1: conv → relu → maxpool(3, 2, padding 1) → conv → ReLU clipped at
    ``cap`` → maxpool(2, 2) with ceil-mode padding (bottom/right) → flatten → dense → relu → dense."""
    g = _gen(seed)
    nodes = [
        Node("input", "input"),
        conv("conv1", ["input"], 3, 4, 3, (1, 1), (1, 1, 1, 1), g, dtype),
        op("relu1", "relu", ["conv1"]),
        op("pool1", "maxpool", ["relu1"], kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1]),
        conv("conv2", ["pool1"], 4, 5, 3, (1, 1), (1, 1, 1, 1), g, dtype, scale=1.5),
        op("relu2", "relu", ["conv2"], max_value=cap),
        op("pool2", "maxpool", ["relu2"], kernel=[2, 2], stride=[2, 2], padding=[0, 1, 0, 1]),
        op("flat", "flatten", ["pool2"]),
    ]
    p = -(-((size + 1) // 2) // 2)
    nodes += [dense("fc1", ["flat"], 5 * p * p, 8, g, dtype), op("relu3", "relu", ["fc1"]),
              dense("fc2", ["relu3"], 8, 4, g, dtype)]
    return centre_logits(finish(nodes, "fc2", (3, size, size), name="maxpool"))


def grouped_concat_cnn(dtype=torch.float64, seed=0, size=7) -> Graph:
    """(e) Real-world layers, part 2: preprocessing affine → conv ('same', so the affine stays) →
    relu → depthwise conv (groups 4, multiplier 2) → relu, and a 1×1 branch → relu; their concat
    (12 channels) → batch-norm (kept as an affine node) → relu → grouped conv (groups 3) → relu → zero pad →
    adaptive average pool (3, 3) with uneven windows → flatten → dense."""
    g = _gen(seed)
    nodes = [
        Node("input", "input"),
        Node("norm", "affine", ["input"], {"weight": _uniform(g, (2,), 2.0, 4.0, dtype),
                                           "bias": _normal(g, (2,), 0.5, dtype)}),
        conv("conv1", ["norm"], 2, 4, 3, (1, 1), (1, 1, 1, 1), g, dtype, scale=0.3),
        op("relu1", "relu", ["conv1"]),
        conv("dw", ["relu1"], 1, 8, 3, (1, 1), (1, 1, 1, 1), g, dtype),
        op("relu_dw", "relu", ["dw"]),
        conv("pw", ["relu1"], 4, 4, 1, (1, 1), (0, 0, 0, 0), g, dtype, scale=2.0),
        op("relu_pw", "relu", ["pw"]),
        op("cat", "concat", ["relu_dw", "relu_pw"]),
        batchnorm("bn", ["cat"], 12, g, dtype),
        op("relu_bn", "relu", ["bn"]),
        conv("gconv", ["relu_bn"], 4, 6, 3, (1, 1), (1, 1, 1, 1), g, dtype),
        op("relu_g", "relu", ["gconv"]),
        op("pad", "pad", ["relu_g"], padding=[0, 1, 1, 0]),
        op("pool", "adaptive_avgpool", ["pad"], output_size=[3, 3]),
        op("flat", "flatten", ["pool"]),
        dense("fc", ["flat"], 6 * 9, 4, g, dtype),
    ]
    nodes[4].attrs["groups"] = 4
    nodes[11].attrs["groups"] = 3
    nodes[2].params["bias"] = nodes[2].params["bias"].abs()
    return centre_logits(finish(nodes, "fc", (2, size, size), name="grouped_concat"))
