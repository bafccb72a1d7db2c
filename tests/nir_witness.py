"""A witness for the NIR reader: a plain NumPy simulator of NIR's equations.

Written from the NIR documentation (https://nnir.readthedocs.io, "Primitives") and issue 26's text,
not from mininsnn's code: it walks a ``nir.NIRGraph`` (nested subgraphs included) and steps every
node once per time step, in float64. Continuous-time neurons are stepped with forward Euler at
``dt``, the way the simulators of the NIR paper (snnTorch, Norse) do:

    LIF      tau dv/dt = (v_leak - v) + r I        v <- v + dt/tau (v_leak - v + r I)
    IF       dv/dt = r I, read per step            v <- v + r I      (Sinabs/Norse/snnTorch practice)
    CubaLIF  tau_syn dI/dt = -I + w_in x           I <- I + dt/tau_syn (w_in x - I)
             tau_mem dv/dt = (v_leak - v) + r I    v <- v + dt/tau_mem (v_leak - v + r I)  (the new I)

then z = 1 where v > v_threshold, and v <- v_reset there. A node with several incoming edges gets
their sum. Edges that close a cycle (found by a depth-first walk from the Input node) carry the
value their source produced at the previous step, so in ``lif -> w_rec -> lif`` the recurrent
input at step t is ``W S[t-1] + b``; at step 0 every spike before it is 0 (S[-1] = 0), so such an
edge carries what its source gives for silent input: an Affine's bias b, else 0.
"""
import numpy as np

import nir


def flatten_graph(graph, prefix=""):
    """(nodes, edges) with nested NIRGraphs inlined: inner node 'k' of subgraph 's' becomes 's.k';
    an edge into 's' (or 's.input') goes to what the subgraph's Input feeds, an edge out of 's'
    (or 's.output') leaves from what feeds its Output."""
    nodes, edges, entry, exit_ = {}, [], {}, {}
    for name, node in graph.nodes.items():
        full = prefix + name
        if isinstance(node, nir.NIRGraph):
            inner_nodes, inner_edges = flatten_graph(node, full + ".")
            ins = [full + "." + k for k, n in node.nodes.items() if isinstance(n, nir.Input)]
            outs = [full + "." + k for k, n in node.nodes.items() if isinstance(n, nir.Output)]
            entry[full] = [b for a, b in inner_edges if a in ins]
            exit_[full] = [a for a, b in inner_edges if b in outs]
            inner_edges = [(a, b) for a, b in inner_edges if a not in ins and b not in outs]
            nodes.update({k: n for k, n in inner_nodes.items() if k not in ins + outs})
            edges += inner_edges
        else:
            nodes[full] = node
    for a, b in graph.edges:
        a, b = prefix + a, prefix + b
        a = a[: -len(".output")] if a.endswith(".output") and a[: -len(".output")] in exit_ else a
        b = b[: -len(".input")] if b.endswith(".input") and b[: -len(".input")] in entry else b
        for src in exit_.get(a, [a]):
            for dst in entry.get(b, [b]):
                edges.append((src, dst))
    return nodes, edges


def _schedule(nodes, edges):
    """(order, delayed): nodes in an order where every undelayed input is computed first, and the
    set of edges that close a cycle (depth-first from the Input nodes)."""
    succ = {k: [] for k in nodes}
    for a, b in edges:
        succ[a].append(b)
    state, delayed, post = {}, set(), []

    def visit(k):
        state[k] = "open"
        for nxt in succ[k]:
            if state.get(nxt) == "open":
                delayed.add((k, nxt))
            elif nxt not in state:
                visit(nxt)
        state[k] = "done"
        post.append(k)
    for k, n in nodes.items():
        if isinstance(n, nir.Input):
            visit(k)
    return post[::-1], delayed


def _conv2d(x, n):
    """y[b, o, i, j] = sum_{c,u,v} W[o, c, u, v] x[b, c, i s - p + u, j s - p + v] + bias[o]."""
    W = np.asarray(n.weight, np.float64)
    s, p = np.broadcast_to(n.stride, 2), np.broadcast_to(n.padding, 2)
    assert np.all(np.broadcast_to(n.dilation, 2) == 1) and int(n.groups) == 1
    x = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    win = np.lib.stride_tricks.sliding_window_view(x, W.shape[2:], axis=(2, 3))
    win = win[:, :, :: s[0], :: s[1]]
    return np.einsum("bcijuv,ocuv->boij", win, W) + np.asarray(n.bias, np.float64)[:, None, None]


def _pool(x, n, reduce):
    k, s, p = (np.broadcast_to(np.asarray(getattr(n, f)), 2) for f in ("kernel_size", "stride", "padding"))
    x = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    win = np.lib.stride_tricks.sliding_window_view(x, tuple(k), axis=(2, 3))[:, :, :: s[0], :: s[1]]
    return reduce(win, axis=(4, 5))


def _flatten(x, n):
    """NIR's Flatten counts the dims of its input_type: per sample (start_dim 0 = the first dim
    after the batch), unless that type has the batch dim too (Sinabs writes [0, 0, 0, 0])."""
    typ = (n.input_type or {}).get("input")
    with_batch = typ is not None and np.ndim(typ) == 1 and len(typ) == x.ndim
    nd, off = (x.ndim, 0) if with_batch else (x.ndim - 1, 1)
    start, end = int(n.start_dim) % nd + off, int(n.end_dim) % nd + off
    return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1:])


def _f(a):
    return np.asarray(a, np.float64)


def _neuron_step(n, h, state, dt):
    """One Euler step of a LIF, IF or CubaLIF node: (spikes, new state)."""
    v = state.get("v", np.zeros_like(h))
    if isinstance(n, nir.LIF):
        v = v + dt / _f(n.tau) * (_f(n.v_leak) - v + _f(n.r) * h)
    elif isinstance(n, nir.IF):
        v = v + _f(n.r) * h
    else:   # CubaLIF: the current first, then the membrane from the new current
        i = state.get("i", np.zeros_like(h))
        i = i + dt / _f(n.tau_syn) * (_f(n.w_in) * h - i)
        v = v + dt / _f(n.tau_mem) * (_f(n.v_leak) - v + _f(n.r) * i)
        state["i"] = i
    z = v > _f(n.v_threshold)
    v_reset = _f(n.v_reset) if n.v_reset is not None else 0.0
    state["v"] = np.where(z, v_reset, v)
    return z.astype(np.float64)


def _apply(n, h, state, dt):
    if isinstance(n, (nir.Input, nir.Output)):
        return h
    if isinstance(n, nir.Affine):
        return h @ _f(n.weight).T + _f(n.bias)
    if isinstance(n, nir.Linear):
        return h @ _f(n.weight).T
    if isinstance(n, nir.Conv2d):
        return _conv2d(h, n)
    if isinstance(n, nir.SumPool2d):
        return _pool(h, n, np.sum)
    if isinstance(n, nir.AvgPool2d):
        return _pool(h, n, np.mean)
    if isinstance(n, nir.Flatten):
        return _flatten(h, n)
    if isinstance(n, (nir.LIF, nir.IF, nir.CubaLIF)):
        return _neuron_step(n, h, state, dt)
    raise NotImplementedError(f"witness: no rule for {type(n).__name__}")


def _at_rest(n):
    """A node's output for silent input (before step 0): an Affine's bias, else 0."""
    return _f(n.bias) if isinstance(n, nir.Affine) else 0.0


def simulate(graph, x, dt, record=False):
    """Run ``graph`` on x: (T, B, *input shape) float64, one frame per step. Returns the value
    reaching the Output node at every step, (T, B, ...); with ``record=True`` also
    {node: (T, B, ...)} of every neuron node's spikes."""
    nodes, edges = flatten_graph(graph)
    order, delayed = _schedule(nodes, edges)
    preds = {k: [a for a, b in edges if b == k] for k in nodes}
    out_name = next(k for k, n in nodes.items() if isinstance(n, nir.Output))
    states = {k: {} for k in nodes}
    prev, outs, spikes = {}, [], {}
    for xt in np.asarray(x, np.float64):
        now = {}
        for k in order:
            n = nodes[k]
            if isinstance(n, nir.Input):
                h = xt
            else:
                parts = [prev.get(a, _at_rest(nodes[a])) if (a, k) in delayed else now[a]
                         for a in preds[k]]
                h = sum(parts[1:], parts[0])
            now[k] = _apply(n, h, states[k], dt)
            if isinstance(n, (nir.LIF, nir.IF, nir.CubaLIF)):
                spikes.setdefault(k, []).append(now[k])
        outs.append(now[out_name])
        prev = now
    out = np.array(outs)
    return (out, {k: np.array(v) for k, v in spikes.items()}) if record else out
