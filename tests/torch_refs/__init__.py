"""Small PyTorch reference implementations for the equivalence tests, and a helper that
makes a reference's outputs discriminating."""


def randomize(model, classifier, seed=0):
    """Eval mode, BN statistics and affine away from the identity, and the `classifier`
    (a Linear or Conv2d of `model`) scaled by 30, so that a wrong conversion cannot hide
    under the tolerance. Returns `model`."""
    import torch

    torch.manual_seed(seed)
    model.eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        classifier.weight.mul_(30.0)
    return model


def assert_same_logits(model, reference, size, label, seed=0):
    """Runs the Keras `model` and the PyTorch `reference` on the same random NHWC / NCHW
    batch; their logits must agree within 1e-4 (relative beyond |logit| 10), and be large
    enough for the check to mean something. Returns the max abs difference."""
    import numpy as np
    import torch

    x = np.random.RandomState(seed).randn(2, *size, 3).astype("float32")
    ours = model.predict(x, verbose=0)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    scale = float(np.abs(theirs).max())
    assert scale > 1.0  # the comparison is not vacuous
    diff = float(np.abs(ours - theirs).max())
    print(f"{label} {size}: max abs logit diff {diff:.2e} (max |logit| {scale:.1f})")
    assert diff < 1e-4 * max(1.0, scale / 10)
    return diff


def save_official_checkpoint(path, module, state, epoch):
    """Saves `state` (module key -> tensor) the way huawei-noah's training scripts do: under
    'state_dict', with DataParallel's 'module.' prefix and thop's total_ops / total_params
    counters for every submodule of `module`."""
    import torch

    wrapped = {f"module.{k}": v for k, v in state.items()}
    for module_name, _ in module.named_modules():
        prefix = f"module.{module_name}." if module_name else "module."
        wrapped[prefix + "total_ops"] = torch.zeros(1, dtype=torch.float64)
        wrapped[prefix + "total_params"] = torch.zeros(1, dtype=torch.float64)
    torch.save({"state_dict": wrapped, "epoch": epoch}, path)
    return wrapped
