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
