-- The Lua part of the caem module: helpers written on top of the C bindings.
--
-- luaopen_caem runs this chunk with the module table as its argument. It is
-- read from CAEM_LUA_PATH/caem.lua, from lua/caem.lua beside the program, or
-- from the copy compiled into the program (caem.prelude names the source).
-- So an edit here takes effect without a rebuild when the program finds the
-- file.
local caem = ...

-- Raises "FUNCTION: unknown option ..." for a key of `options` that is not
-- in `allowed`, as the C functions do.
local function check_options(options, allowed, function_name)
  if options == nil then
    return {}
  end
  if type(options) ~= "table" then
    error(function_name .. ": expected a table of options, got " .. type(options), 3)
  end
  for key in pairs(options) do
    local known = false
    for _, name in ipairs(allowed) do
      known = known or key == name
    end
    if not known then
      error(string.format("unknown option '%s' for %s (expected one of: %s)",
                          tostring(key), function_name, table.concat(allowed, ", ")), 3)
    end
  end
  return options
end

local function output_of(options)
  local out = options.out or io.stdout
  return function(...)
    out:write(...)
  end
end

-- caem.print_usage(usage, {out=, experts=}) prints one line per MoE layer:
-- the stack, the block (0-based, as in tensor names), the tokens counted,
-- the normalized entropy and each expert's share of the kept tokens in
-- percent (the first `experts` experts, 16 by default), then the mean
-- normalized entropy per stack.
function caem.print_usage(usage, options)
  options = check_options(options, { "out", "experts" }, "caem.print_usage")
  if type(usage) ~= "table" or usage.mean_entropy == nil then
    error("caem.print_usage: expected a usage table (job:result().usage, "
          .. "model:usage_records()[i].usage), got " .. type(usage), 2)
  end
  local write = output_of(options)
  local shown = math.min(options.experts or 16, usage.experts)
  write(string.format("%-7s %5s %9s %7s  share per expert (%%)%s\n", "stack", "block",
                      "tokens", "entropy", shown < usage.experts and ", first " .. shown or ""))
  for _, layer in ipairs(usage) do
    local kept, dropped = 0, 0
    for e = 1, usage.experts do
      kept = kept + layer.kept[e]
      dropped = dropped + layer.dropped[e]
    end
    local line = string.format("%-7s %5d %9d %7.3f ", layer.stack, layer.block, layer.tokens,
                               layer.entropy)
    for e = 1, shown do
      local share = kept > 0 and 100 * layer.kept[e] / kept or 0
      line = line .. string.format(" %5.1f", share)
    end
    if dropped > 0 then
      line = line .. string.format("  dropped %d", dropped)
    end
    write(line, "\n")
  end
  write(string.format("mean normalized entropy: encoder %.3f, decoder %.3f\n",
                      usage.mean_entropy.encoder, usage.mean_entropy.decoder))
end

local function format_cell(value)
  if value == nil then
    return ""
  elseif math.type(value) == "float" then
    return string.format("%.4g", value)
  end
  return tostring(value)
end

-- The union of the rows' keys, sorted, for a table without a column list.
local function columns_of(rows)
  local seen, columns = {}, {}
  for _, row in ipairs(rows) do
    for key in pairs(row) do
      if not seen[key] and type(key) == "string" then
        seen[key] = true
        columns[#columns + 1] = key
      end
    end
  end
  table.sort(columns)
  return columns
end

-- caem.table_print(rows, {columns=, out=}) prints a list of tables as
-- aligned columns: a column of numbers right-aligned (fractions with 4
-- significant digits), other columns left-aligned, a missing value blank.
-- The columns are `columns` in that order, or every string key of the rows,
-- sorted.
function caem.table_print(rows, options)
  options = check_options(options, { "columns", "out" }, "caem.table_print")
  if type(rows) ~= "table" then
    error("caem.table_print: expected a list of rows, got " .. type(rows), 2)
  end
  local write = output_of(options)
  local columns = options.columns or columns_of(rows)
  local widths, numeric = {}, {}
  for c, name in ipairs(columns) do
    widths[c] = #name
    numeric[c] = true
    for _, row in ipairs(rows) do
      widths[c] = math.max(widths[c], #format_cell(row[name]))
      numeric[c] = numeric[c] and (row[name] == nil or type(row[name]) == "number")
    end
  end
  local function line(cells)
    local parts = {}
    for c = 1, #columns do
      local align = numeric[c] and "%" or "%-"
      parts[c] = string.format(align .. widths[c] .. "s", cells[c])
    end
    write((table.concat(parts, "  "):gsub("%s+$", "")), "\n")
  end
  line(columns)
  for _, row in ipairs(rows) do
    local cells = {}
    for c, name in ipairs(columns) do
      cells[c] = format_cell(row[name])
    end
    line(cells)
  end
end

-- caem.sweep{grid={name={values...}, ...}, run=function(params) ... end,
-- order={names...}} calls run once for every combination of the grid's
-- values, the last name of `order` (default: the names sorted) varying
-- fastest. It returns one row per call: the parameters, and the fields of
-- the table run returned, or its value under `result`.
function caem.sweep(spec)
  spec = check_options(spec, { "grid", "run", "order" }, "caem.sweep")
  if type(spec.grid) ~= "table" then
    error("caem.sweep: option 'grid' must be a table of value lists", 2)
  end
  if type(spec.run) ~= "function" then
    error("caem.sweep: option 'run' must be a function", 2)
  end
  local names = spec.order or columns_of({ spec.grid })
  for _, name in ipairs(names) do
    local values = spec.grid[name]
    if type(values) ~= "table" or #values == 0 then
      error(string.format("caem.sweep: grid entry '%s' must be a non-empty list", name), 2)
    end
  end
  for name in pairs(spec.grid) do
    local ordered = false
    for _, other in ipairs(names) do
      ordered = ordered or other == name
    end
    if not ordered then
      error(string.format("caem.sweep: grid entry '%s' is missing from option 'order'",
                          tostring(name)), 2)
    end
  end
  local rows, chosen = {}, {}
  local function visit(depth)
    if depth > #names then
      local params = {}
      for k, v in pairs(chosen) do
        params[k] = v
      end
      local result = spec.run(params)
      local row = {}
      for k, v in pairs(chosen) do
        row[k] = v
      end
      if type(result) == "table" then
        for k, v in pairs(result) do
          row[k] = v
        end
      else
        row.result = result
      end
      rows[#rows + 1] = row
      return
    end
    for _, value in ipairs(spec.grid[names[depth]]) do
      chosen[names[depth]] = value
      visit(depth + 1)
    end
  end
  visit(1)
  return rows
end

return caem
