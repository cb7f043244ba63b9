"""Guest images: the self-test kernel + initramfs, the disk template's Debian base
image and its per-VM overlay and cloud-init seed."""
