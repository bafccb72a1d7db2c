"""NIR graphs as mininsnn sees them: the error type, and a graph's structure as one chain.

Shared by the writer (mininsnn/nir.py) and the reader (mininsnn/nir_read.py): nested subgraphs
are inlined (node 'k' of subgraph 's' is 's.k'), every loop neuron -> Affine/Linear -> the same
neuron is folded into its neuron (a recurrent layer), and what is left must be one chain from the
Input node to the Output node; the per-sample input shape drops a leading batch dimension of 1.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from mininsnn.config import ConfigError

#: Length of one time step in seconds: snnTorch's export_to_nir / import_from_nir use 1e-4.
DEFAULT_DT = 1e-4
FORMAT = "mininsnn-nir"
FORMAT_VERSION = 2          # 2: per-neuron arrays, Synaptic, recurrent layers, SumPool2d
PRODUCER = "mininsnn"
NEURON_TYPES = ("LIF", "IF", "CubaLIF")


class NIRError(ConfigError):
    """A network that cannot be exported to NIR, or a NIR file or graph that mininsnn cannot run.

    A ConfigError (so a ValueError): the command line prints it as one line and exits with 2."""


def nir_package():
    """The ``nir`` package, or a one-line NIRError saying how to install it."""
    try:
        import nir      # optional extra: only NIR export and import need it
    except ImportError:
        raise NIRError("NIR export and import need the optional package 'nir': "
                       "pip install 'mininsnn[nir]' (or pip install nir)") from None
    return nir


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def node_metadata(node, use: bool) -> dict:
    md = getattr(node, "metadata", None)
    if use and isinstance(md, dict) and md.get("producer") == PRODUCER:
        return md
    return {}


# =============================================================================================
# the graph's structure: nested subgraphs inlined, recurrent loops folded, then one chain

def inline_subgraphs(graph, nir, where, prefix=""):
    """(nodes, edges) of a graph whose nested NIRGraph nodes are replaced by their inner nodes,
    named 'sub.inner'. Outer edges to 'sub' (or to its Input, 'sub.input') reach what that Input
    feeds; edges from 'sub' (or 'sub.output') leave from what feeds its Output."""
    nodes, edges, ports = {}, [], {}
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.NIRGraph):
            nodes[prefix + name] = node
            continue
        sub = f"{prefix}{name}."
        ends = [[k for k, n in node.nodes.items() if isinstance(n, c)] for c in (nir.Input, nir.Output)]
        if [len(e) for e in ends] != [1, 1]:
            raise NIRError(f"{where}: node {prefix + name!r}: a subgraph with {len(ends[0])} Input and "
                           f"{len(ends[1])} Output nodes; mininsnn runs subgraphs with one of each")
        inner, inner_edges = inline_subgraphs(node, nir, where, sub)
        ports[prefix + name] = (sub + ends[0][0], sub + ends[1][0])
        nodes.update(inner)
        edges += inner_edges
    for a, b in graph.edges:
        a, b = prefix + str(a), prefix + str(b)
        a = ports[a][1] if a in ports else a
        b = ports[b][0] if b in ports else b
        edges.append((a, b))
    for k in [k for pair in ports.values() for k in pair]:   # a subgraph's ends pass input on
        ins, outs = [a for a, b in edges if b == k], [b for a, b in edges if a == k]
        edges = [e for e in edges if k not in e] + [(a, b) for a in ins for b in outs]
        del nodes[k]
    return nodes, edges


def fold_recurrence(nodes, edges, where, nir):
    """{neuron: (name, weight node)} for every loop neuron -> Affine/Linear -> the same neuron; those
    weight nodes and their two edges leave the graph (the neuron layer holds W_rec)."""
    loops = {}
    for a, b in edges:
        if (b, a) in edges and isinstance(nodes.get(a), (nir.Affine, nir.Linear)) \
                and type(nodes.get(b)).__name__ in NEURON_TYPES:
            if [e for e in edges if a in e and e not in ((a, b), (b, a))]:
                continue    # not a pure loop: the chain check names what is wrong
            if loops.get(b, a) != a:
                raise NIRError(f"{where}: node {b!r}: two recurrent loops on one layer")
            loops[b] = a
    for b, a in loops.items():
        edges[:] = [e for e in edges if e not in ((a, b), (b, a))]
        loops[b] = (a, nodes.pop(a))
    return loops


def chain_of(nodes, edges, where, nir) -> list[str]:
    """Node names from the Input node to the Output node; NIRError unless the graph is one chain."""
    if not nodes:
        raise NIRError(f"{where}: the graph has no nodes")
    inputs = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRError(f"{where}: the graph has {len(inputs)} Input and {len(outputs)} Output "
                       "nodes; mininsnn runs graphs with one of each")
    succ, preds = {}, {}
    for a, b in edges:
        if a not in nodes or b not in nodes:
            raise NIRError(f"{where}: edge ({a!r}, {b!r}) names a node that does not exist")
        if a in succ:
            raise NIRError(f"{where}: node {a!r} feeds both {succ[a]!r} and {b!r}; mininsnn runs "
                           "one chain of layers, without branches")
        if b in preds:
            raise NIRError(f"{where}: node {b!r} has two inputs ({preds[b]!r}, {a!r}); mininsnn "
                           "runs one chain of layers, without merges (recurrence: neuron -> "
                           "Affine/Linear -> the same neuron)")
        succ[a], preds[b] = b, a
    chain, seen = [inputs[0]], {inputs[0]}
    while chain[-1] != outputs[0]:
        nxt = succ.get(chain[-1])
        if nxt is None:
            raise NIRError(f"{where}: node {chain[-1]!r} leads nowhere; the chain from "
                           f"{inputs[0]!r} does not reach the output {outputs[0]!r}")
        if nxt in seen:
            raise NIRError(f"{where}: the graph has a cycle through {nxt!r} that is not a "
                           "recurrent loop neuron -> Affine/Linear -> the same neuron")
        chain.append(nxt)
        seen.add(nxt)
    stray = [k for k in nodes if k not in seen]
    if stray:
        raise NIRError(f"{where}: node {stray[0]!r} is not on the chain from input to output")
    return chain


def check_fields(node, name, where, nir):
    """Refuse node types mininsnn does not know and fields its node class does not have."""
    known = {f.name for f in dataclasses.fields(type(node))} if dataclasses.is_dataclass(node) \
        else set()
    extra = sorted(set(vars(node)) - known - {"nodes", "edges", "type_check"})
    if extra:
        raise NIRError(f"{where}: node {name!r}: unknown field {extra[0]!r} of a "
                       f"{type(node).__name__} node; mininsnn would ignore it")


def scan_file(where):
    """Node types and fields in the file itself: ``nir.read`` fails on an unknown field without
    naming the node, and on an unknown type without a message."""
    import h5py     # comes with nir

    nir = nir_package()
    kinds = {c.__name__: c for c in vars(nir).values()
             if isinstance(c, type) and dataclasses.is_dataclass(c)}

    def walk(group, path):
        for name, node in group["nodes"].items():
            kind = node["type"][()].decode() if "type" in node else "?"
            if kind not in kinds:
                raise NIRError(f"{where}: node {path + name!r}: unknown node type {kind!r}")
            fields = {f.name for f in dataclasses.fields(kinds[kind])}
            extra = sorted(set(node) - fields - {"type", "shape", "nodes", "edges"})
            if extra:
                raise NIRError(f"{where}: node {path + name!r}: unknown field {extra[0]!r} of a "
                               f"{kind} node; mininsnn would ignore it")
            if kind == "NIRGraph":
                walk(node, f"{path}{name}.")
    with h5py.File(where, "r") as f:
        walk(f["node"], "")


def shape_of(types, key):
    """A node's input or output shape, or None where it gives none (missing, empty, or all 0 as
    Sinabs writes an unknown one)."""
    v = types.get(key) if isinstance(types, dict) else types
    a = None if v is None else np.atleast_1d(np.asarray(v))
    if a is None or a.size == 0 or a.dtype.kind not in "iu" or not a.any():
        return None
    return tuple(int(d) for d in a)


def _takes(node, shape, nir):
    """Whether ``node`` takes per-sample inputs of ``shape`` (to tell a batch dimension apart)."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        return shape == tuple(np.shape(node.weight)[1:])
    if isinstance(node, nir.Conv2d):
        return len(shape) == 3 and shape[0] == np.shape(node.weight)[1]
    if type(node).__name__ in NEURON_TYPES:
        sizes = [np.shape(getattr(node, f)) for f in ("v_threshold", "r") if hasattr(node, f)]
        return all(s in ((), (1,), shape, (1,) + shape) for s in sizes) and len(shape) <= 3
    return len(shape) <= 3      # mininsnn's samples are vectors or (C, H, W) images


def input_shape_of(nodes, chain, where, nir):
    """The per-sample input shape: the Input node's, without a leading batch dimension of 1."""
    shape = shape_of(getattr(nodes[chain[0]], "input_type", None), "input")
    if shape is None:
        raise NIRError(f"{where}: node {chain[0]!r}: input_type gives no shape")
    nxt = nodes[chain[1]]
    if len(shape) >= 2 and shape[0] == 1 and _takes(nxt, shape[1:], nir) \
            and not _takes(nxt, shape, nir):
        shape = shape[1:]
    return shape


