-- Argo CD health of a Shardkeeper Task, Shard, Collection or StorageMapping, from the
-- conditions the operator writes (docs/operator.md, "Conditions"). Lua 5.1, as Argo CD's
-- interpreter is. Install: docs/gitops.md.
local hs = {}
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to report"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end
local found = {}
for _, condition in ipairs(status.conditions) do
  found[condition.type] = condition
end
local ready, reconciling, stalled = found["Ready"], found["Reconciling"], found["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.reason .. ": " .. (stalled.message or "")
  return hs
end
if reconciling ~= nil and reconciling.reason == "Paused" then
  hs.status = "Suspended"
  hs.message = reconciling.message or "paused"
  return hs
end
if ready ~= nil and ready.status == "True" then
  if ready.reason == "Disabled" then
    hs.status = "Suspended"
    hs.message = ready.message or "disabled"
  elseif reconciling ~= nil and reconciling.status == "True" then
    hs.status = "Progressing"
    hs.message = reconciling.reason .. ": " .. (reconciling.message or "")
  else
    hs.status = "Healthy"
    hs.message = ready.message or ""
  end
  return hs
end
hs.status = "Progressing"
if ready ~= nil then
  hs.message = ready.reason .. ": " .. (ready.message or "")
else
  hs.message = "waiting for the operator to report"
end
return hs
