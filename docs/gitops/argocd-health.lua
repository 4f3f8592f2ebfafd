-- Argo CD health check for agentflow.dev/Workflow.
-- Install it in argocd-cm as resource.customizations.health.agentflow.dev_Workflow (README.md).
--
-- Pending/Running -> Progressing; Succeeded -> Healthy; Failed -> Degraded;
-- Succeeded but degraded (a fallback agent ran or a step was skipped) -> Degraded, unless
-- degradedIsHealthy is true; spec.suspend on an unfinished workflow -> Suspended.
-- A workflow the operator has not seen yet (no status, or status.observedGeneration behind
-- metadata.generation) is Progressing, never Healthy: an old status must not vouch for a
-- changed spec.

-- Set to true to treat a degraded success as Healthy (the message still says it was degraded).
local degradedIsHealthy = false

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

-- The most specific human-readable text the status offers.
local function describe(status, fallback)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  local ready = condition(status, "Ready")
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    return ready.message
  end
  return fallback
end

local hs = {status = "Progressing", message = "Waiting for the operator"}
local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
  return hs
end

local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase
local suspended = obj.spec ~= nil and obj.spec.suspend == true

if phase == "Succeeded" then
  if status.degraded == true then
    local degraded = condition(status, "Degraded")
    local text = "Succeeded with fallbacks or skipped steps"
    if degraded ~= nil and degraded.message ~= nil and degraded.message ~= "" then
      text = degraded.message
    elseif status.message ~= nil and status.message ~= "" then
      text = status.message
    end
    if degradedIsHealthy then
      hs.status = "Healthy"
      hs.message = "Degraded: " .. text
    else
      hs.status = "Degraded"
      hs.message = text
    end
    return hs
  end
  hs.status = "Healthy"
  hs.message = describe(status, "Succeeded")
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(status, "Failed")
  return hs
end

if suspended then
  hs.status = "Suspended"
  hs.message = "Suspended (spec.suspend)"
  return hs
end

if phase == "Pending" or phase == "Running" then
  hs.status = "Progressing"
  if status.progress ~= nil and status.progress ~= "" then
    hs.message = phase .. ": " .. status.progress
  else
    hs.message = describe(status, phase)
  end
  return hs
end

hs.status = "Unknown"
hs.message = "Unknown phase " .. tostring(phase)
return hs
