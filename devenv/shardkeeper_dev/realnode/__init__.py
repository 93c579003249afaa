"""The real node: kubelet (built from k8s.io/kubernetes), containerd and runc (Debian's
packages), CNI's bridge and host-local plugins, a pause image built here, and the process
node's binder and provisioner standing in for kube-scheduler and a local-volume
provisioner. ``shardkeeper dev up --node real`` starts it; see docs/real-node.md.
"""
