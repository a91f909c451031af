# Local training of the fog's model definition: softmax regression or an MLP with ReLU
# hidden layers. Tensors, in order: per layer the weight (fan_in, fan_out), row-major,
# then the bias (fan_out,) -- the order of update frames and model blobs.
# Minibatch SGD over array('f') buffers, mean cross-entropy, optional FedProx term
# mu/2 * ||w - w_global||^2. Every buffer is allocated once, in __init__.
#
# Memory: without FedProx (mu 0) and with `base` given, the trainer takes the global
# weights over and trains them in place, keeping no copy: at the end, base(t, buf) reads
# global tensor t back (from the model cached on flash) into the gradient buffer, which
# is free by then, and the delta is computed there. Weights + gradients, nothing more.
#
# The work is written as generators (example_steps, step_steps, delta_steps) that yield
# after each row of a layer and each 32 weights: example(), step() and delta() just run
# them through. A caller may instead resume them one piece at a time, as the heap test on
# the WebAssembly port does (that port collects garbage only between calls).
import math

from rt import as_bytes, const, copy_floats, drain, zeros

_CHUNK = const(32)  # weights updated between two yields of step() and delta()


def layer_sizes(spec):
    hidden = list(spec.get("hidden") or []) if spec["kind"] == "mlp" else []
    return [spec["input_dim"]] + hidden + [spec["num_classes"]]


def shapes(spec):
    s = layer_sizes(spec)
    out = []
    for i in range(len(s) - 1):
        out.append((s[i], s[i + 1]))
        out.append((s[i + 1],))
    return out


def arena(n, old=None):
    # One array('f') of n zeros for the gradients: old (zeroed) when it has n entries.
    # The board keeps it from round to round and writes the update frame into its bytes
    # once the gradients are spent, so frame and gradients share one block.
    if old is None or len(old) != n:
        return zeros(n)
    for i in range(n):
        old[i] = 0.0
    return old


class Trainer:
    def __init__(self, spec, weights, lr, batch_size=16, mu=0.0, base=None, grads=None):
        # weights: the global model, list of array('f'); kept unchanged (FedProx, delta),
        # unless mu is 0 and base(t, buf) can read global tensor t again: then trained in
        # place. grads: a zeroed array('f') of at least the model's size for the
        # gradients (arena()), else allocated here. One flat array: tensor t at goff[t].
        self.sizes = layer_sizes(spec)
        self.shapes = shapes(spec)
        self.lr = lr
        self.mu = mu
        self.batch_size = max(1, batch_size)
        self.base = base if not mu else None
        if self.base is not None:
            self.w0 = None
            self.w = weights
        else:
            self.w0 = weights
            self.w = [copy_floats(t) for t in weights]
        self.goff = []
        n = 0
        for t in weights:
            self.goff.append(n)
            n += len(t)
        self.g = grads if grads is not None else zeros(n)
        n = len(self.sizes)
        self.acts = [None] + [zeros(self.sizes[i]) for i in range(1, n)]
        self.errs = [None] + [zeros(self.sizes[i]) for i in range(1, n)]
        self.in_batch = 0
        self.steps = 0
        self.samples = 0
        self.loss = 0.0

    def forward(self, x):
        # Class probabilities of x (a buffer reused by the next call).
        return drain(self.forward_steps(x))

    def forward_steps(self, x):
        self.acts[0] = x
        last = len(self.sizes) - 2
        for layer in range(last + 1):
            a = self.acts[layer]
            z = self.acts[layer + 1]
            w = self.w[2 * layer]
            b = self.w[2 * layer + 1]
            fo = self.sizes[layer + 1]
            for j in range(fo):
                z[j] = b[j]
            for i in range(self.sizes[layer]):
                ai = a[i]
                if ai != 0.0:
                    base = i * fo
                    for j in range(fo):
                        z[j] += ai * w[base + j]
                yield
            if layer < last:
                for j in range(fo):
                    if z[j] < 0.0:
                        z[j] = 0.0
        p = self.acts[last + 1]
        m = p[0]
        for v in p:
            if v > m:
                m = v
        s = 0.0
        for j in range(len(p)):
            e = math.exp(p[j] - m)
            p[j] = e
            s += e
        for j in range(len(p)):
            p[j] /= s
        return p

    def example(self, x, y):
        # Accumulate the gradient of one labelled example; steps at each full batch.
        drain(self.example_steps(x, y))

    def example_steps(self, x, y):
        p = yield from self.forward_steps(x)
        self.loss -= math.log(p[y] + 1e-12)
        last = len(self.sizes) - 1
        d = self.errs[last]
        for j in range(len(p)):
            d[j] = p[j]
        d[y] -= 1.0
        for layer in range(last - 1, -1, -1):
            a = self.acts[layer]
            w = self.w[2 * layer]
            g = self.g
            ow = self.goff[2 * layer]
            ob = self.goff[2 * layer + 1]
            fo = self.sizes[layer + 1]
            for j in range(fo):
                g[ob + j] += d[j]
            prev = self.errs[layer] if layer else None
            for i in range(self.sizes[layer]):
                ai = a[i]
                base = i * fo
                if ai != 0.0:
                    gi = ow + base
                    for j in range(fo):
                        g[gi + j] += ai * d[j]
                if prev is not None:
                    # ReLU: the hidden activation is > 0 exactly where it passed.
                    s = 0.0
                    if ai > 0.0:
                        for j in range(fo):
                            s += w[base + j] * d[j]
                    prev[i] = s
                yield
            d = prev
        self.samples += 1
        self.in_batch += 1
        if self.in_batch >= self.batch_size:
            yield from self.step_steps()

    def step(self):
        # One SGD step with the mean gradient of the examples since the last step.
        drain(self.step_steps())

    def step_steps(self):
        if not self.in_batch:
            return
        scale = 1.0 / self.in_batch
        lr = self.lr
        mu = self.mu
        g = self.g
        for t in range(len(self.w)):
            w = self.w[t]
            o = self.goff[t]
            n = len(w)
            for s in range(0, n, _CHUNK):
                e = min(s + _CHUNK, n)
                if mu:
                    w0 = self.w0[t]
                    for i in range(s, e):
                        w[i] -= lr * (g[o + i] * scale + mu * (w[i] - w0[i]))
                        g[o + i] = 0.0
                else:
                    for i in range(s, e):
                        w[i] -= lr * g[o + i] * scale
                        g[o + i] = 0.0
                yield
        self.in_batch = 0
        self.steps += 1

    def delta(self):
        # Local minus global weights, as (shape, array) pairs; consumes the local weights.
        return drain(self.delta_steps())

    def delta_steps(self):
        yield from self.step_steps()
        out = []
        g = self.g
        for t in range(len(self.w)):
            w = self.w[t]
            n = len(w)
            if self.base is not None:
                # The gradients are all zeros after step(): their first n entries take
                # the global tensor (base reads it into those bytes).
                self.base(t, memoryview(as_bytes(g))[:4 * n])
                w0 = g
            else:
                w0 = self.w0[t]
            for s in range(0, n, _CHUNK):
                for i in range(s, min(s + _CHUNK, n)):
                    w[i] -= w0[i]
                yield
            out.append((self.shapes[t], w))
        self.g = None
        return out
