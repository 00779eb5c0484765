"""The Linux layer: subprocesses, namespaces, mounts, loop devices, chroots and files inside
an image. It knows nothing of bakes or plugins."""
