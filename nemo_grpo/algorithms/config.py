"""Config sections consumed by ``nemo_grpo.algorithms``: ``advantage:``, ``loss:`` and ``dapo:``.

Plain dataclasses (validated by the project's YAML loader); cross-field rules live in each
class's ``validate()`` and in :func:`validate_sections` for rules that span sections. Anchor
equivalents are given per field; ``docs/algorithms.md`` has the full table.

Recipes (YAML):

* DeepScaleR (NeMo RL): ``advantage: {estimator: grpo, leave_one_out: true}``,
  ``loss: {clip_low: 0.2, clip_high: 0.2, kl_coef: 0.0, aggregation: token-mean}``;
  16K stage: ``loss: {kl_coef: 0.001, clip_high: 0.28}``.
* DAPO: ``loss: {clip_high: 0.28, dual_clip_c: 10.0}``, ``dapo: {dynamic_sampling: true,
  overlong_buffer: {enabled: true, length: 4096, max_response_length: 20480}}``.
* Archer: ``loss: {dual_clip_c: 10.0, kl_type: low_var_kl, archer: {enabled: true}}``.
* cs336 r1_zero: ``loss: {name: no_baseline | reinforce_with_baseline | grpo_clip,
  aggregation: seq-mean-token-mean | seq-mean-token-sum-norm, norm_constant: 1024}``,
  ``advantage: {estimator: raw}`` for no_baseline, ``{normalize_std: false}`` for "without std".
* Qwen3-0.6B: ``loss: {entropy_coef: 0.01, kl_coef: 0.05}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

AdvantageEstimator = Literal["grpo", "dr_grpo", "rloo", "raw", "reinforce_pp_baseline", "passk", "opo", "gpg"]
LossName = Literal[
    "ppo_clip", "grpo_clip", "reinforce", "no_baseline", "reinforce_with_baseline", "gpg",
    "gspo", "cispo", "sapo", "gmpo", "clip_cov", "kl_cov",
]
AggregationMode = Literal[
    "token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"
]
KlType = Literal["k1", "k2", "k3", "abs", "low_var_kl", "k1+", "k3+", "abs+", "low_var_kl+"]
KlWeight = Literal["none", "score_function", "rollout_ratio", "policy_ratio"]

# Estimator -> whether it divides by a std when ``normalize_std`` is left at None.
_STD_DEFAULT = {"grpo": True, "dr_grpo": False, "rloo": False, "raw": False,
                "reinforce_pp_baseline": False, "passk": True, "opo": False, "gpg": False}


@dataclass
class AdvantageConfig:
    """``advantage:`` how scalar rewards become advantages."""

    estimator: AdvantageEstimator = "grpo"
    """grpo: (R - group mean) [/ (std + eps)] (verl grpo, TRL, NeMo, cs336); dr_grpo: no std
    (verl norm_adv_by_std_in_grpo=False, TRL scale_rewards=none); rloo: leave-one-out mean
    baseline, no std (verl rloo); raw: A = R, no baseline (cs336 no_baseline); reinforce_pp_baseline:
    group mean then batch whitening over tokens (verl reinforce_plus_plus_baseline, NeMo
    reinforce_plus_plus); passk: verl grpo_passk; opo: length-weighted baseline; gpg: verl gpg."""
    normalize_std: bool | None = None
    """Divide by the std; None = the estimator's default (True for grpo/passk, False otherwise).
    verl norm_adv_by_std_in_grpo, NeMo normalize_rewards, cs336 normalize_by_std."""
    std_scope: Literal["group", "batch"] = "group"
    """Std over the prompt's group or over the whole batch (TRL scale_rewards=batch)."""
    leave_one_out: bool = False
    """NeMo use_leave_one_out_baseline: baseline and std from the OTHER samples of the group."""
    epsilon: float = 1e-6
    """Added to the std (verl/NeMo/cs336 1e-6; TRL 1e-4). Not applied where std == 0."""
    unbiased_std: bool = True
    """Bessel-corrected (n-1) std, as every anchor uses (cs336 snapshots require it)."""
    singleton: Literal["zero", "raw"] = "zero"
    """Single-response group: zero = A 0 (NeMo, verl rloo_vectorized); raw = A = R/(1+eps) (verl grpo/rloo)."""
    whiten_epsilon: float = 1e-8
    """reinforce_pp_baseline: variance epsilon of the batch whitening (verl and NeMo 1e-8)."""

    def std_enabled(self) -> bool:
        """Effective std normalisation after applying the estimator default."""
        return _STD_DEFAULT[self.estimator] if self.normalize_std is None else self.normalize_std

    def validate(self) -> None:
        if self.estimator not in _STD_DEFAULT:
            raise ValueError(f"advantage.estimator: unknown {self.estimator!r}; choose one of {sorted(_STD_DEFAULT)}")
        if self.epsilon < 0 or self.whiten_epsilon < 0:
            raise ValueError("advantage.epsilon: must be >= 0")
        if self.normalize_std and self.estimator in ("dr_grpo", "raw", "opo", "gpg", "reinforce_pp_baseline"):
            raise ValueError(
                f"advantage.normalize_std: estimator {self.estimator!r} never divides by a group std; "
                "remove normalize_std or use estimator grpo"
            )
        if self.estimator == "rloo" and self.normalize_std:
            raise ValueError(
                "advantage.normalize_std: rloo has no std; for NeMo's leave-one-out std use "
                "estimator: grpo with leave_one_out: true"
            )
        if self.leave_one_out and self.estimator not in ("grpo", "rloo"):
            raise ValueError("advantage.leave_one_out: only meaningful for estimator grpo (or rloo)")
        if self.std_scope == "batch" and (self.leave_one_out or not self.std_enabled()):
            raise ValueError("advantage.std_scope: 'batch' needs normalize_std and no leave_one_out")


@dataclass
class ImportanceSamplingConfig:
    """``loss.importance_sampling:`` correction for the rollout engine vs trainer mismatch.

    Weight ``w = exp(old_logp - gen_logp)`` per token, or ``exp(sum_t (old - gen))`` per sequence
    (NeMo use_importance_sampling_correction; verl rollout_is_weights; TRL vllm_importance_sampling_*);
    the per-token loss is multiplied by ``w`` before aggregation."""

    level: Literal["none", "token", "sequence"] = "none"
    """none: off; token: per-token ratio; sequence: product over the response (NeMo with GSPO)."""
    truncation: Literal["none", "tis", "icepop", "seq_mask_tis"] = "tis"
    """tis: clamp w to [cap_min or 0, cap_max]; icepop: w = 0 outside [cap_min, cap_max];
    seq_mask_tis: zero whole sequences whose geometric-mean ratio leaves [cap_min, cap_max]
    (NeMo truncated_importance_sampling_type)."""
    cap_max: float | None = 2.0
    """Upper truncation (verl rollout_is_threshold 2.0, NeMo truncated_importance_sampling_ratio)."""
    cap_min: float | None = None
    """Lower truncation (NeMo truncated_importance_sampling_ratio_min); None = 0 for tis."""

    def validate(self) -> None:
        if self.level == "none":
            return
        if self.truncation in ("icepop", "seq_mask_tis") and (self.cap_min is None or self.cap_max is None):
            raise ValueError(f"loss.importance_sampling.truncation: {self.truncation} needs cap_min and cap_max")
        if self.truncation == "tis" and self.cap_max is None:
            raise ValueError("loss.importance_sampling.cap_max: tis needs a cap (or truncation: none)")
        if self.cap_min is not None and self.cap_max is not None and self.cap_min > self.cap_max:
            raise ValueError("loss.importance_sampling.cap_min: must be <= cap_max")


@dataclass
class ArcherConfig:
    """``loss.archer:`` Archer dual-token constraints (ArcherCodeR use_token_entropy_separate)."""

    enabled: bool = False
    """Split each response's tokens at its entropy quantile and use separate clip ranges / KL."""
    entropy_quantile: float = 0.8
    """Per-response quantile of token entropy (torch.nanquantile, linear); tokens <= it are
    low-entropy "knowledge" tokens (Archer token_entropy_quantile)."""
    low_entropy_clip_low: float = 0.2
    """Archer low_entropy_clip_ratio_low."""
    low_entropy_clip_high: float = 0.2
    """Archer low_entropy_clip_ratio_high."""
    high_entropy_clip_low: float = 0.5
    """Archer high_entropy_clip_ratio_low."""
    high_entropy_clip_high: float = 0.5
    """Archer high_entropy_clip_ratio_high."""
    low_entropy_kl_coef: float = 0.001
    """KL coefficient on low-entropy tokens, normalised by their own count (Archer kl_loss_coef)."""
    high_entropy_kl_coef: float = 0.0
    """KL coefficient on high-entropy tokens (Archer high_entropy_kl_loss_scale_coef)."""


@dataclass
class LossConfig:
    """``loss:`` the policy loss, its KL and entropy terms, and the aggregation."""

    name: LossName = "ppo_clip"
    """ppo_clip = grpo_clip (verl vanilla, NeMo ClippedPG, TRL grpo/bnpo/dapo, cs336 grpo_clip);
    reinforce = no_baseline = reinforce_with_baseline = gpg: -A*logp (cs336, NeMo disable_ppo_ratio,
    verl gpg); gspo (sequence ratio); cispo; sapo; gmpo (verl geo_mean); clip_cov; kl_cov."""
    clip_low: float = 0.2
    """eps_low: ratio clipped below at 1-clip_low (verl clip_ratio_low, NeMo ratio_clip_min, TRL epsilon)."""
    clip_high: float = 0.2
    """eps_high: ratio clipped above at 1+clip_high (verl clip_ratio_high, NeMo ratio_clip_max, TRL
    epsilon_high; DAPO clip-higher 0.28). For TRL cispo, clip_high = epsilon_high - 1."""
    dual_clip_c: float | None = None
    """Dual clip for A<0: loss <= -c*A (verl clip_ratio_c, always on at 3.0; NeMo ratio_clip_c; TRL delta).
    None = off (NeMo/TRL default)."""
    log_ratio_clamp: float | None = 20.0
    """Clamp logp-old_logp to +-this before exp (verl 20; NeMo/TRL none); only matters for |log r|>20."""
    aggregation: AggregationMode = "token-mean"
    """Per-token loss -> scalar (verl loss_agg_mode; see nemo_grpo.algorithms.aggregation)."""
    norm_constant: float | None = None
    """C of seq-mean-token-sum-norm (Dr. GRPO max response length; verl loss_scale_factor, TRL
    max_completion_length, cs336 normalize_constant). Required for that mode."""
    kl_coef: float = 0.0
    """Coefficient of the KL-to-reference loss term (verl kl_loss_coef, NeMo reference_policy_kl_penalty, TRL beta)."""
    kl_type: KlType = "k3"
    """Estimator (verl kl_loss_type, NeMo reference_policy_kl_type; TRL fixed k3). low_var_kl = k3."""
    kl_input_clamp: float | None = 20.0
    """Clamp on logp-ref_logp before the estimator (NeMo kl_input_clamp_value; verl k3 only)."""
    kl_output_clamp: float | None = 10.0
    """Clamp on the estimate (NeMo kl_output_clamp_value; verl k3 only; TRL none)."""
    kl_weight: KlWeight = "none"
    """Importance weight on the KL estimate: none (verl, TRL<=1.10); score_function (NeMo default,
    gives the unbiased KL gradient); rollout_ratio (NeMo use_on_policy_kl_approximation);
    policy_ratio (TRL use_bias_correction_kl)."""
    kl_in_reward: bool = False
    """Subtract kl_coef * sum_t KL(old||ref) from the reward instead of adding a loss term
    (verl use_kl_in_reward, NeMo use_kl_in_reward)."""
    entropy_coef: float = 0.0
    """Entropy bonus: loss -= entropy_coef * agg(H) (verl entropy_coeff, TRL entropy_coef). Entropy is
    always reported as a metric."""
    top_entropy_quantile: float = 1.0
    """TRL top_entropy_quantile rho: only tokens whose entropy >= the (1-rho) quantile of the
    micro-batch keep their loss (denominators unchanged). 1.0 = off."""
    sapo_tau_pos: float = 1.0
    """SAPO gate temperature for A>0 (verl tau_pos, TRL sapo_temperature_pos)."""
    sapo_tau_neg: float = 1.05
    """SAPO gate temperature for A<=0 (verl tau_neg, TRL sapo_temperature_neg)."""
    clip_cov_ratio: float = 2e-4
    """clip_cov: fraction of tokens to detach (verl clip_cov_ratio)."""
    clip_cov_lb: float = 1.0
    """clip_cov: lower covariance bound (verl clip_cov_lb)."""
    clip_cov_ub: float = 5.0
    """clip_cov: upper covariance bound (verl clip_cov_ub)."""
    kl_cov_ratio: float = 2e-4
    """kl_cov: fraction of top-covariance tokens that get the |log r| penalty (verl kl_cov_ratio)."""
    kl_cov_coef: float = 0.1
    """kl_cov: penalty coefficient (verl ppo_kl_coef)."""
    positive_nll_coef: float = 0.0
    """VAPO: + coef * mean NLL over tokens of samples with reward > 0 (NeMo positive_example_nll_weight)."""
    importance_sampling: ImportanceSamplingConfig = field(default_factory=ImportanceSamplingConfig)
    """Rollout-vs-trainer importance-sampling correction (needs gen log-probs)."""
    archer: ArcherConfig = field(default_factory=ArcherConfig)
    """Archer dual-token loss (with name ppo_clip)."""

    @property
    def archer_kl(self) -> bool:
        """Archer is on with a KL term on either entropy side."""
        return bool(self.archer.enabled and (self.archer.low_entropy_kl_coef or self.archer.high_entropy_kl_coef))

    @property
    def kl_loss_term(self) -> bool:
        """The KL to the reference is a term of the loss (kl_in_reward moves it into the reward)."""
        return self.kl_coef != 0.0 and not self.kl_in_reward

    @property
    def needs_reference(self) -> bool:
        """Reference log-probs are needed: a KL in the loss or the reward, or Archer's split KL."""
        return self.kl_coef != 0.0 or self.archer_kl

    @property
    def needs_all_rows(self) -> bool:
        """Rows with zero advantage still have a gradient (a KL, entropy or NLL term), so none may skip
        the backward pass."""
        return self.kl_loss_term or self.archer_kl or self.entropy_coef != 0.0 or self.positive_nll_coef != 0.0

    def validate(self) -> None:
        if self.clip_low < 0 or self.clip_high < 0:
            raise ValueError("loss.clip_low/clip_high: must be >= 0 (they are epsilons, not ratio bounds)")
        if self.dual_clip_c is not None and self.dual_clip_c <= 1.0:
            raise ValueError(f"loss.dual_clip_c: must be > 1 (got {self.dual_clip_c}); use null to disable")
        if self.dual_clip_c is not None and self.name not in ("ppo_clip", "grpo_clip"):
            raise ValueError(f"loss.dual_clip_c: only ppo_clip/grpo_clip use a dual clip, not {self.name!r}")
        if self.aggregation == "seq-mean-token-sum-norm" and not self.norm_constant:
            raise ValueError(
                "loss.norm_constant: seq-mean-token-sum-norm needs a constant (the maximum response length);"
                " verl's fallback to the padded length changes from batch to batch"
            )
        if self.name == "gmpo" and self.aggregation != "seq-mean-token-mean":
            raise ValueError("loss.aggregation: gmpo is a per-sequence loss; use seq-mean-token-mean")
        if self.kl_in_reward and self.kl_coef == 0:
            raise ValueError("loss.kl_in_reward: set kl_coef > 0 (it is the reward penalty coefficient)")
        if not 0.0 < self.top_entropy_quantile <= 1.0:
            raise ValueError("loss.top_entropy_quantile: must be in (0, 1]")
        if self.sapo_tau_pos <= 0 or self.sapo_tau_neg <= 0:
            raise ValueError("loss.sapo_tau_pos/sapo_tau_neg: must be > 0")
        self.importance_sampling.validate()
        if self.archer.enabled:
            if self.name not in ("ppo_clip", "grpo_clip"):
                raise ValueError("loss.archer.enabled: the Archer dual-token loss modifies ppo_clip; set loss.name: ppo_clip")
            if self.kl_coef != 0.0 or self.kl_in_reward:
                raise ValueError(
                    "loss.kl_coef: with archer enabled the KL is split; set archer.low_entropy_kl_coef and "
                    "archer.high_entropy_kl_coef and leave kl_coef at 0"
                )
            if not 0.0 <= self.archer.entropy_quantile <= 1.0:
                raise ValueError("loss.archer.entropy_quantile: must be in [0, 1]")


@dataclass
class OverlongBufferConfig:
    """``dapo.overlong_buffer:`` DAPO soft overlong punishment."""

    enabled: bool = False
    """verl overlong_buffer.enable; NeMo reward_shaping.enabled."""
    length: int = 4096
    """Buffer length L_buf (verl overlong_buffer.len, NeMo overlong_buffer_length)."""
    penalty_factor: float = 1.0
    """Penalty at the maximum length (verl penalty_factor, NeMo overlong_buffer_penalty)."""
    max_response_length: int | None = None
    """L_max, the generation cap (verl max_response_length, NeMo max_response_length)."""


@dataclass
class DapoConfig:
    """``dapo:`` DAPO data-side extras."""

    dynamic_sampling: bool = False
    """Drop groups whose rewards are all equal (verl filter_groups, NeMo use_dynamic_sampling)."""
    max_num_gen_batches: int = 10
    """Generation rounds before giving up on filling the batch; 0 = unlimited (verl max_num_gen_batches)."""
    overlong_buffer: OverlongBufferConfig = field(default_factory=OverlongBufferConfig)
    """Soft overlong reward shaping."""
    stop_properly_penalty_coef: float | None = None
    """Multiply the reward of truncated responses by this (NeMo stop_properly_penalty_coef). None = off."""

    def validate(self) -> None:
        if self.max_num_gen_batches < 0:
            raise ValueError("dapo.max_num_gen_batches: must be >= 0 (0 = unlimited)")
        ob = self.overlong_buffer
        if ob.enabled:
            if ob.max_response_length is None:
                raise ValueError("dapo.overlong_buffer.max_response_length: required when the buffer is enabled")
            if not 0 < ob.length < ob.max_response_length:
                raise ValueError("dapo.overlong_buffer.length: must be > 0 and < max_response_length")
            if ob.penalty_factor < 0:
                raise ValueError("dapo.overlong_buffer.penalty_factor: must be >= 0")
        if self.stop_properly_penalty_coef is not None and not 0.0 <= self.stop_properly_penalty_coef <= 1.0:
            raise ValueError("dapo.stop_properly_penalty_coef: must be in [0, 1]")


def validate_sections(advantage: AdvantageConfig, loss: LossConfig, dapo: DapoConfig) -> None:
    """Validate each section and the rules that span sections."""
    advantage.validate()
    loss.validate()
    dapo.validate()
    if loss.name == "no_baseline" and advantage.estimator != "raw":
        raise ValueError("advantage.estimator: loss no_baseline uses the raw reward; set advantage.estimator: raw")
    if loss.name == "reinforce_with_baseline" and advantage.estimator == "raw":
        raise ValueError("advantage.estimator: reinforce_with_baseline needs a baseline (e.g. grpo), not raw")
    if loss.name == "gmpo" and advantage.estimator == "reinforce_pp_baseline":
        raise ValueError("loss.name: gmpo needs sequence-level advantages, not reinforce_pp_baseline")
