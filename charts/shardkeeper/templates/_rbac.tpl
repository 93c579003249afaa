{{/* What the operator does, and nothing more. It also holds every permission it grants
the shard runtimes' Roles (docs/shard-pod.md): Kubernetes refuses to let anyone create a
Role or RoleBinding granting more than they hold themselves. */}}
{{- define "shardkeeper.rules" -}}
  # watched; finalizers on Tasks; status of everything
  - apiGroups: [shardkeeper.io]
    resources: [tasks, collections, storagemappings]
    verbs: [get, list, watch, patch]
  - apiGroups: [shardkeeper.io]
    resources: [shards]
    verbs: [get, list, watch, create, patch, delete]
  - apiGroups: [shardkeeper.io]
    resources: [tasks/status, collections/status, storagemappings/status, shards/status]
    verbs: [get, patch]
  # owner references that block their owner's deletion
  - apiGroups: [shardkeeper.io]
    resources: [tasks/finalizers, shards/finalizers]
    verbs: [update]
  # each shard's workload, applied server-side
  - apiGroups: [apps]
    resources: [statefulsets]
    verbs: [get, list, watch, create, patch, delete]
  - apiGroups: [""]
    resources: [services, serviceaccounts]
    verbs: [get, create, patch, delete]
  - apiGroups: [policy]
    resources: [poddisruptionbudgets]
    verbs: [get, create, patch, delete]
  - apiGroups: [rbac.authorization.k8s.io]
    resources: [roles, rolebindings]
    verbs: [get, create, patch, delete]
  # rolls (one pod at a time) and waiting for pods to stop before deleting data; patch
  # only to grant it: each shard pod labels itself with its role
  - apiGroups: [""]
    resources: [pods]
    verbs: [list, delete, patch]
  # get: the Secrets a Task or StorageMapping names (key names kept, never values), and
  # granted to the runtime Roles; list/watch: a metadata-only watch (docs/security.md)
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [events]
    verbs: [create, patch]
  # the operator's own leader election, and the shards' primary election it grants
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [get, create, update, patch]
{{- end -}}
