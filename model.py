"""RecurrentAttention: wires the modules of modules.py into one agent.

A rollout of T glimpses on images x [B, C, H, W]:

    h_0 = 0;  l_0 ~ U(-1, 1)^2 (random), l_0 = (0, 0) (centre), or l_0 ~ pi(. | h_0) (learned)
    for t in 1..T:  g_t = sensor(x, l_{t-1});  h_t = rnn(g_t, h_{t-1})
                    l_t, log_pi_t = locator(h_t);  b_t = baseliner(h_t)
    log p(y | x) = classifier(h_T)
"""
import paddle
import paddle.nn as nn

from modules import (ActionNetwork, BaselineNetwork, CoreNetwork, GlimpseNetwork,
                     LocationNetwork)

FIRST_FIXATIONS = ("random", "centre", "learned")


class RecurrentAttention(nn.Layer):
    """Args: g patch size, k patches per glimpse, s scale between patches, c image channels,
    h_g / h_l hidden sizes of the glimpse network, std of the location policy, hidden_size of
    the core, num_classes; reinforce_core lets the REINFORCE gradient reach the core and
    glimpse networks (default: the locator reads a detached h_t, as in the reference); core
    one of CoreNetwork.KINDS; first_fixation one of FIRST_FIXATIONS ("learned": the location
    network applied to h_0 = 0, a policy step of its own with its log-probability and
    baseline); normalize=(mean, std): the images hold pixel intensities 0..255, which the
    retina normalises (see modules.Retina), else it reads x as given."""

    def __init__(self, g, k, s, c, h_g, h_l, std, hidden_size, num_classes,
                 reinforce_core=False, core="rnn", first_fixation="random", normalize=None):
        super().__init__()
        self.hidden_size = hidden_size
        self.first_fixation = first_fixation
        self.sensor = GlimpseNetwork(h_g, h_l, g, k, s, c, normalize)
        self.rnn = CoreNetwork(h_g + h_l, hidden_size, core)
        self.locator = LocationNetwork(hidden_size, 2, std, detach=not reinforce_core)
        self.classifier = ActionNetwork(hidden_size, num_classes)
        self.baseliner = BaselineNetwork(hidden_size, 1)

    @property
    def policy_steps_before_first_glimpse(self):
        """1 when the first fixation is a draw of the policy (noise and log_pi get a row)."""
        return int(self.first_fixation == "learned")

    def draw_episode(self, batch, num_glimpses, dtype, l_0=None, noise=None):
        """The episode's random draws that are not given, from Paddle's seeded generator in
        this order: the first fixation l_0 [B, 2] uniform over the image (for a random first
        fixation; else None), then the policy's standard-normal noise [P + T, B, 2] (None at
        std 0, where the policy is its mean)."""
        if l_0 is None and self.first_fixation == "random":
            l_0 = paddle.uniform([batch, 2], dtype=dtype, min=-1.0, max=1.0)
        if noise is None and self.locator.std > 0:
            steps = self.policy_steps_before_first_glimpse + num_glimpses
            noise = paddle.randn([steps, batch, 2], dtype=dtype)
        return l_0, noise

    def forward(self, x, l_t_prev, h_t_prev, noise=None):
        """One glimpse.

        Args:
            x: [B, C, H, W]; l_t_prev: [B, 2]; h_t_prev: [B, state_size], the core's state
            (h_{t-1} itself for the RNN cores); noise: [B, 2] standard-normal draw for the
            location policy (None only at std 0).
        Returns:
            (state_t [B, state_size], l_t [B, 2], b_t [B], log_pi [B]); the classifier reads
            self.rnn.hidden(state_T) once the episode is over (see rollout).
        """
        g_t = self.sensor(x, l_t_prev)
        state = self.rnn(g_t, h_t_prev)
        h_t = self.rnn.hidden(state)
        log_pi, l_t = self.locator(h_t, noise)
        b_t = self.baseliner(h_t).squeeze(1)
        return state, l_t, b_t, log_pi

    def fixation_pixels(self, x, locs):
        """The pixels (column, row) [T, N, 2] int64 that the sharp patches of glimpses
        locs [T, N, 2] centre on, in the frame of images x [N, C, H, W]."""
        T, N, _ = locs.shape
        return self.sensor.retina.centre(x, locs.reshape([T * N, 2])).reshape([T, N, 2])

    def rollout(self, x, num_glimpses, l_0=None, noise=None):
        """A whole episode of num_glimpses glimpses.

        Args:
            x: [B, C, H, W]; l_0: optional first fixation [B, 2] (not with "learned");
            noise: optional location-policy noise [P + num_glimpses, B, 2] (exact, repeatable
            runs), P = policy_steps_before_first_glimpse; what is not given is drawn
            (draw_episode).
        Returns:
            log_probas [B, classes], log_pi [B, P + T], baselines [B, P + T], locs [T, B, 2]
            where locs[t] is where glimpse t looked (locs[0] = l_0).
        """
        B = x.shape[0]
        if l_0 is not None and self.first_fixation == "learned":
            raise ValueError("a learned first fixation is drawn from the policy; pass noise")
        l_0, noise = self.draw_episode(B, num_glimpses, x.dtype, l_0, noise)
        state = paddle.zeros([B, self.rnn.state_size], dtype=x.dtype)
        locs, log_pis, baselines = [], [], []
        if self.first_fixation == "learned":
            h_0 = self.rnn.hidden(state)
            log_pi, l_t = self.locator(h_0, None if noise is None else noise[0])
            log_pis.append(log_pi)
            baselines.append(self.baseliner(h_0).squeeze(1))
            noise = None if noise is None else noise[1:]
        elif l_0 is not None:
            l_t = l_0
        else:  # centre
            l_t = paddle.zeros([B, 2], dtype=x.dtype)
        for t in range(num_glimpses):
            locs.append(l_t)
            state, l_t, b_t, log_pi = self(x, l_t, state, None if noise is None else noise[t])
            log_pis.append(log_pi)
            baselines.append(b_t)
        log_probas = self.classifier(self.rnn.hidden(state))
        return log_probas, paddle.stack(log_pis, 1), paddle.stack(baselines, 1), paddle.stack(locs)


# A fixation "finds" the digit when it lies within this many pixels of the digit's centre on
# both axes. MNIST digits fill the central 20x20 pixels of their 28x28 box, so within 10 px
# the sharpest patch is centred on the digit's strokes and, for any patch side g <= 20, at
# least half of its width on each axis lies over them: the sharp patch reads the digit.
FOUND_RADIUS = 10


class SearchMeter:
    """Splits the error of an evaluation into search and recognition.

    add(fixations [T, M*B, 2], centres [B, 2], correct [B]) takes each glimpse's fixation
    (pixel (column, row), Retina.centre), the digit's centre (data_loader's digit_centres)
    and whether each image was classified right. An image is found when any fixation of any
    of its M trajectories lies within FOUND_RADIUS of its digit on both axes. Sums stay on the
    device (no host sync per batch); totals() returns them as one float vector, which
    summary() reads (and distributed runs sum over ranks first)."""

    def __init__(self, num_glimpses):
        self.T = num_glimpses
        self.sums = paddle.zeros([4 + num_glimpses])

    def add(self, fixations, centres, correct):
        T, MB, _ = fixations.shape
        B = centres.shape[0]
        offset = fixations.astype("float32").reshape([T, MB // B, B, 2]) - centres
        found = (offset.abs().max(axis=3) <= FOUND_RADIUS).astype("float32").max(axis=[0, 1])
        dist = offset.pow(2).sum(axis=3).sqrt().mean(axis=1).sum(axis=1)               # [T]
        correct = correct.astype("float32")
        counts = paddle.stack([paddle.full([], B, "float32"), found.sum(),
                               (found * correct).sum(), ((1 - found) * correct).sum()])
        self.sums += paddle.concat([counts, dist])

    def totals(self):
        return self.sums.tolist()

    @staticmethod
    def summary(totals):
        """{found (% of images), err_found, err_lost (% of those images), lost_errors (% of
        all errors), dist [T] (mean px from the digit's centre per glimpse)} from totals()."""
        n, found, right_found, right_lost = totals[:4]
        lost = n - found
        errors = n - right_found - right_lost

        def pct(a, b):
            return 100.0 * a / b if b else float("nan")
        return {"found": pct(found, n), "err_found": pct(found - right_found, found),
                "err_lost": pct(lost - right_lost, lost),
                "lost_errors": pct(lost - right_lost, errors),
                "dist": [d / n for d in totals[4:]]}

    @staticmethod
    def describe(s):
        """One line for logs."""
        return (f"found {s['found']:.1f}% (a fixation within {FOUND_RADIUS} px of the digit), "
                f"err found {s['err_found']:.2f}% lost {s['err_lost']:.2f}% "
                f"(lost: {s['lost_errors']:.0f}% of errors) | dist/glimpse "
                + " ".join(f"{d:.1f}" for d in s["dist"]) + " px")
