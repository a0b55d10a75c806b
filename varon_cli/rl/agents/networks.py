"""Value networks: an MLP torso, noisy layers, Q / dueling / C51 heads, and an LSTM torso for DRQN.

Every parameter is initialised from a `torch.Generator` the agent owns (layers
are built on the meta device, skipping torch's default init), so building a
network never touches torch's global RNG and the same seed gives the same
weights in any process.

- `NoisyLinear`: factorised Gaussian noise, Fortunato et al. 2018, "Noisy
  Networks for Exploration". Learned noise replaces epsilon-greedy.
- `DuelingHead`: Q = V + A - mean(A), Wang et al. 2016, "Dueling Network
  Architectures for Deep Reinforcement Learning".
- `C51Head`: a categorical distribution over 51 fixed atoms per action,
  Bellemare et al. 2017, "A Distributional Perspective on Reinforcement Learning".
- `RecurrentTorso`: an LSTM over the observations, Hausknecht & Stone 2015,
  "Deep Recurrent Q-Learning for Partially Observable MDPs".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def init_linear_(layer: nn.Linear, generator: torch.Generator) -> nn.Linear:
    """torch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from `generator`."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


def linear(in_dim: int, out_dim: int, generator: torch.Generator) -> nn.Linear:
    """A Linear layer initialised from `generator` (no global RNG draw)."""
    return init_linear_(nn.utils.skip_init(nn.Linear, in_dim, out_dim), generator)


def _scaled_noise(size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """f(x) = sgn(x) sqrt(|x|) of standard normals, the factorised-noise transform."""
    x = torch.randn(size, generator=generator, device=device)
    return x.sign() * x.abs().sqrt()


class NoisyLinear(nn.Module):
    """y = (mu_w + sigma_w * eps_w) x + (mu_b + sigma_b * eps_b), factorised noise (Fortunato et al. 2018).

    eps_w = f(eps_out) f(eps_in)^T needs only in + out normal draws per
    resample instead of in * out, which is what makes resampling every step
    affordable. Noise is drawn only when `reset_noise` is called, from the
    generator given (the agent's), so runs are reproducible. In eval mode the
    layer uses the means only: greedy evaluation is deterministic.
    """

    def __init__(self, in_dim: int, out_dim: int, sigma0: float, generator: torch.Generator) -> None:
        super().__init__()
        self.in_features, self.out_features = in_dim, out_dim
        bound = 1.0 / math.sqrt(in_dim)
        self.weight_mu = nn.Parameter(torch.empty(out_dim, in_dim).uniform_(-bound, bound, generator=generator))
        self.bias_mu = nn.Parameter(torch.empty(out_dim).uniform_(-bound, bound, generator=generator))
        # sigma_0 / sqrt(p) for both, as the paper prescribes for factorised noise.
        self.weight_sigma = nn.Parameter(torch.full((out_dim, in_dim), sigma0 * bound))
        self.bias_sigma = nn.Parameter(torch.full((out_dim,), sigma0 * bound))
        self.register_buffer("eps_in", torch.zeros(in_dim))
        self.register_buffer("eps_out", torch.zeros(out_dim))

    def reset_noise(self, generator: torch.Generator) -> None:
        """Draw fresh factorised noise."""
        with torch.no_grad():
            self.eps_in.copy_(_scaled_noise(self.in_features, generator, self.eps_in.device))
            self.eps_out.copy_(_scaled_noise(self.out_features, generator, self.eps_out.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.weight_mu, self.bias_mu)
        weight = self.weight_mu + self.weight_sigma * torch.outer(self.eps_out, self.eps_in)
        return F.linear(x, weight, self.bias_mu + self.bias_sigma * self.eps_out)


def _layer(in_dim: int, out_dim: int, noisy: bool, sigma0: float, generator: torch.Generator) -> nn.Module:
    return NoisyLinear(in_dim, out_dim, sigma0, generator) if noisy else linear(in_dim, out_dim, generator)


class MLP(nn.Module):
    """Linear + ReLU layers: the feature torso shared by every head.

    With `noisy`, every layer after the first is a NoisyLinear: the first
    layer plays the part of Fortunato et al.'s convolutional feature layers,
    which stay deterministic, and the fully connected layers after it carry
    the noise. Noise in the output layer alone is too small against the gaps
    between Q-values to explore.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], generator: torch.Generator,
                 noisy: bool = False, sigma0: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for k, width in enumerate(hidden):
            layers += [_layer(in_dim, width, noisy and k > 0, sigma0, generator), nn.ReLU()]
            in_dim = width
        self.body = nn.Sequential(*layers)
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class QHead(nn.Module):
    """One output per action (per atom when `atoms` > 1): plain DQN (Mnih et al. 2015)."""

    def __init__(self, in_dim: int, n_actions: int, generator: torch.Generator,
                 atoms: int = 1, noisy: bool = False, sigma0: float = 0.5) -> None:
        super().__init__()
        self.n_actions, self.atoms = n_actions, atoms
        self.out = _layer(in_dim, n_actions * atoms, noisy, sigma0, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.out(x)
        return y if self.atoms == 1 else y.view(*x.shape[:-1], self.n_actions, self.atoms)


class DuelingHead(nn.Module):
    """Q(s, a) = V(s) + A(s, a) - mean_a A(s, a) (Wang et al. 2016).

    Separating the state value from the action advantages lets every update
    improve V for all actions, which helps when actions often do not matter
    (as with most bars in a market). Subtracting the mean keeps V and A
    identifiable. With `atoms` > 1 the same combination is applied per atom to
    logits, as Rainbow does (Hessel et al. 2018).
    """

    def __init__(self, in_dim: int, n_actions: int, generator: torch.Generator,
                 atoms: int = 1, noisy: bool = False, sigma0: float = 0.5) -> None:
        super().__init__()
        self.n_actions, self.atoms = n_actions, atoms
        self.value = _layer(in_dim, atoms, noisy, sigma0, generator)
        self.advantage = _layer(in_dim, n_actions * atoms, noisy, sigma0, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        value = self.value(x).view(*lead, 1, self.atoms)
        adv = self.advantage(x).view(*lead, self.n_actions, self.atoms)
        out = value + adv - adv.mean(dim=-2, keepdim=True)
        return out.squeeze(-1) if self.atoms == 1 else out


class C51Head(nn.Module):
    """Logits of a categorical return distribution on `atoms` atoms in [v_min, v_max] (Bellemare et al. 2017).

    Output shape [..., n_actions, atoms]; `q_values` turns logits into
    expectations. Learning the whole distribution rather than its mean gives
    richer gradients; 51 atoms is the paper's choice.
    """

    def __init__(self, in_dim: int, n_actions: int, generator: torch.Generator, atoms: int = 51,
                 v_min: float = -10.0, v_max: float = 10.0, dueling: bool = False,
                 noisy: bool = False, sigma0: float = 0.5) -> None:
        super().__init__()
        if atoms < 2 or not v_max > v_min:
            raise ValueError(f"C51 needs atoms >= 2 and v_max > v_min, got {atoms}, [{v_min}, {v_max}]")
        head = DuelingHead if dueling else QHead
        self.logits = head(in_dim, n_actions, generator, atoms=atoms, noisy=noisy, sigma0=sigma0)
        self.register_buffer("support", torch.linspace(v_min, v_max, atoms))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)

    def q_values(self, logits: torch.Tensor) -> torch.Tensor:
        """Expected return per action: sum_i p_i z_i."""
        return (logits.softmax(dim=-1) * self.support).sum(dim=-1)


def project_distribution(probs: torch.Tensor, returns: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Project mass `probs` sitting on atoms `returns` onto the fixed `support`: C51's Phi (Bellemare et al. 2017).

    probs and returns are [..., K]. Each shifted atom Tz_j = r + gamma z_j is
    clipped to [v_min, v_max] and its mass split between the two neighbouring
    support atoms in proportion to closeness (Algorithm 1 of the paper). The
    lower neighbour's index is capped at K-2, so an atom landing exactly on a
    support point (including v_max) gives all its mass to one neighbour
    instead of losing it when floor == ceil; the two shares always sum to
    the atom's mass, so total mass is preserved.
    """
    atoms = support.shape[0]
    v_min, v_max = support[0], support[-1]
    position = (returns.clamp(min=v_min, max=v_max) - v_min) / ((v_max - v_min) / (atoms - 1))
    lower = position.floor().clamp_(max=atoms - 2)
    upper_share = position - lower
    lower = lower.long()
    out = torch.zeros_like(probs)
    out.scatter_add_(-1, lower, probs * (1.0 - upper_share))
    out.scatter_add_(-1, lower + 1, probs * upper_share)
    return out


class QNetwork(nn.Module):
    """MLP torso + a Q, dueling or C51 head: every feed-forward variant DQNAgent needs.

    `forward` returns Q-values [B, A] for scalar heads and logits [B, A, K] for
    C51; `q_values` always returns Q-values. With `noisy`, the head and every
    torso layer but the first are noisy (see MLP).
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int], generator: torch.Generator, *,
                 dueling: bool = False, noisy: bool = False, sigma0: float = 0.5,
                 atoms: int = 1, v_min: float = -10.0, v_max: float = 10.0) -> None:
        super().__init__()
        self.torso = MLP(obs_dim, hidden, generator, noisy=noisy, sigma0=sigma0)
        self.distributional = atoms > 1
        if self.distributional:
            self.head: nn.Module = C51Head(self.torso.out_dim, n_actions, generator, atoms, v_min, v_max,
                                           dueling=dueling, noisy=noisy, sigma0=sigma0)
        else:
            head = DuelingHead if dueling else QHead
            self.head = head(self.torso.out_dim, n_actions, generator, noisy=noisy, sigma0=sigma0)
        self.noisy_layers = [m for m in self.modules() if isinstance(m, NoisyLinear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(x))

    def q_values(self, x: torch.Tensor) -> torch.Tensor:
        out = self(x)
        return self.head.q_values(out) if self.distributional else out

    def reset_noise(self, generator: torch.Generator) -> None:
        """Fresh noise for every noisy layer, drawn as one vector (fewer small ops per acting step)."""
        if not self.noisy_layers:
            return
        sizes = [n for layer in self.noisy_layers for n in (layer.in_features, layer.out_features)]
        noise = _scaled_noise(sum(sizes), generator, self.noisy_layers[0].eps_in.device).split(sizes)
        for k, layer in enumerate(self.noisy_layers):
            layer.eps_in, layer.eps_out = noise[2 * k], noise[2 * k + 1]


class RecurrentTorso(nn.Module):
    """MLP encoder then an LSTM (Hausknecht & Stone 2015): Q depends on the whole history.

    Acting takes one `step` at a time; training runs `unroll` over a replayed
    window with `nn.LSTM` (its C++ loop is about 3x faster on CPU than a Python
    loop of cells). nn.LSTM returns only the last cell state, so when every
    step's (h, c) is needed (action augmentation takes one more step from each
    of them) `cell_states` recomputes c from the inputs and the returned h
    sequence: the gates depend on h_{t-1} only, leaving a cheap linear
    recursion c_t = f_t c_{t-1} + i_t g_t.
    """

    def __init__(self, obs_dim: int, hidden: Sequence[int], lstm_hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.encoder = MLP(obs_dim, hidden, generator)
        # built on the meta device so construction draws nothing from the global RNG
        self.lstm = nn.LSTM(self.encoder.out_dim, lstm_hidden, batch_first=True, device="meta").to_empty(device="cpu")
        bound = 1.0 / math.sqrt(lstm_hidden)
        with torch.no_grad():
            for p in self.lstm.parameters():
                p.uniform_(-bound, bound, generator=generator)
        self.out_dim = lstm_hidden

    def _weights(self) -> tuple[torch.Tensor, ...]:
        lstm = self.lstm
        return lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0

    def step(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x [N, obs_dim], state (h, c) each [N, H] -> new (h, c)."""
        return torch.lstm_cell(self.encoder(x), state, *self._weights())

    def unroll(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """h after every step of x [B, T, obs_dim] ([B, T, H]), from `state` (None: zeros)."""
        z = self.encoder(x)
        if state is not None:
            state = (state[0].unsqueeze(0).contiguous(), state[1].unsqueeze(0).contiguous())
        return self.lstm(z, state)[0]

    def cell_states(self, x: torch.Tensor, hs: torch.Tensor) -> torch.Tensor:
        """c after every step of an `unroll` from zero state over x that returned hs (no gradient)."""
        w_ih, w_hh, b_ih, b_hh = self._weights()
        with torch.no_grad():
            h_prev = torch.cat([hs.new_zeros(hs.shape[0], 1, hs.shape[2]), hs[:, :-1]], dim=1)
            gates = F.linear(self.encoder(x), w_ih, b_ih) + F.linear(h_prev, w_hh, b_hh)
            i, f, g, _ = gates.chunk(4, dim=-1)  # torch's gate order: input, forget, cell, output
            decay, inflow = f.sigmoid(), i.sigmoid() * g.tanh()
            c = torch.zeros_like(hs[:, 0])
            cs = []
            for t in range(hs.shape[1]):
                c = torch.addcmul(inflow[:, t], decay[:, t], c)
                cs.append(c)
            return torch.stack(cs, dim=1)


class RecurrentQNetwork(nn.Module):
    """RecurrentTorso + a Q or dueling head: the DRQN network."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int], lstm_hidden: int,
                 generator: torch.Generator, *, dueling: bool = False) -> None:
        super().__init__()
        self.torso = RecurrentTorso(obs_dim, hidden, lstm_hidden, generator)
        head = DuelingHead if dueling else QHead
        self.head = head(lstm_hidden, n_actions, generator)
