"""The compile tests' shared pieces."""


def kernels_argv(target: str, shape: tuple[int, int, int, int]) -> list[str]:
    """`vmp compile kernels` for `target` at the scan shape (b, l, d, n), as JSON."""
    argv = ["compile", "kernels", "--target", target, "--json"]
    names = ("--batch", "--length", "--dim", "--state")
    return argv + [x for name, value in zip(names, shape, strict=True) for x in (name, str(value))]
