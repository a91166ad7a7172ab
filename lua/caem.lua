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

-- caem.pretrain{model=, tasks=, steps=, ...} starts pretraining a common
-- base: T5 span corruption (caem.span_corruption) on the text of every task
-- in `tasks`, trained together as model:train{tasks=} does. Options of
-- caem.span_corruption (chunk, noise_density, mean_span_length) shape the
-- sequences, `seed` seeds both the masks and the run, and every other
-- option goes to model:train. Returns the job.
function caem.pretrain(options)
  options = check_options(options, { "model", "tasks", "steps", "batch", "accumulation", "lr",
                                      "weight_decay", "seed", "chunk", "noise_density",
                                      "mean_span_length", "window", "checkpoint",
                                      "checkpoint_every", "resume", "on_step", "every",
                                      "paused" },
                          "caem.pretrain")
  if options.model == nil then
    error("caem.pretrain: option 'model' is required", 2)
  end
  if type(options.model) ~= "userdata" then
    error("caem.pretrain: option 'model' must be a caem model, got " .. type(options.model), 2)
  end
  if type(options.tasks) ~= "table" or #options.tasks == 0 then
    error("caem.pretrain: option 'tasks' must be a non-empty list of caem.task", 2)
  end
  for i, task in ipairs(options.tasks) do
    if type(task) ~= "userdata" then
      error(("caem.pretrain: tasks[%d] must be a caem.task, got %s"):format(i, type(task)), 2)
    end
  end
  local seed = options.seed or 1
  if math.type(seed) ~= "integer" or seed < 0
     or seed > math.maxinteger - 1000 * #options.tasks then
    error(("caem.pretrain: invalid seed %s (expected an integer from 0 to %d)"):format(
      tostring(seed), math.maxinteger - 1000 * #options.tasks), 2)
  end
  local corrupted = {}
  for i, task in ipairs(options.tasks) do
    corrupted[i] = caem.span_corruption{ task = task, chunk = options.chunk,
                                         noise_density = options.noise_density,
                                         mean_span_length = options.mean_span_length,
                                         seed = seed + 1000 * (i - 1),
                                         name = "span_corruption_" .. task.name }
  end
  local train = { tasks = corrupted, seed = seed, validate_every = 0 }
  for _, key in ipairs({ "steps", "batch", "accumulation", "lr", "weight_decay", "window",
                         "checkpoint", "checkpoint_every", "resume", "on_step", "every",
                         "paused" }) do
    train[key] = options[key]
  end
  return options.model:train(train)
end

local function xml_text(value)
  return (tostring(value):gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                            ['"'] = "&quot;" }))
end

-- The share of kept tokens per expert of one usage layer, in [0, 1].
local function layer_shares(layer, experts)
  local total = 0
  for e = 1, experts do
    total = total + layer.kept[e]
  end
  local shares = {}
  for e = 1, experts do
    shares[e] = total > 0 and layer.kept[e] / total or 0
  end
  return shares
end

-- Colours of the entropy lines, one per panel, in panel order.
local line_colours = { "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
                       "#e377c2", "#7f7f7f" }

-- caem.usage_figure{path=, panels={{title=, usage=}, ...}, title=} writes an
-- SVG figure: per panel a heatmap of the share of kept tokens per MoE layer
-- (rows, encoder first) and expert (columns), on one colour scale from 0 to
-- the largest share of the figure, and below them the normalized entropy per
-- layer, one line per panel. The file is written under a temporary name and
-- renamed. Returns the path.
function caem.usage_figure(options)
  options = check_options(options, { "path", "panels", "title" }, "caem.usage_figure")
  if type(options.path) ~= "string" then
    error("caem.usage_figure: option 'path' must be a file name", 2)
  end
  local panels = options.panels
  if type(panels) ~= "table" or #panels == 0 then
    error("caem.usage_figure: option 'panels' must be a non-empty list of {title=, usage=}", 2)
  end
  local layers, experts = nil, nil
  for i, panel in ipairs(panels) do
    local usage = type(panel) == "table" and panel.usage or nil
    if type(usage) ~= "table" or usage.mean_entropy == nil then
      error(string.format("caem.usage_figure: panel %d has no usage table", i), 2)
    end
    if math.type(usage.experts) ~= "integer" or usage.experts < 1 then
      error(string.format("caem.usage_figure: panel %d: invalid experts %s", i,
                          tostring(usage.experts)), 2)
    end
    for l, layer in ipairs(usage) do
      local h = layer.entropy
      if type(h) ~= "number" or h ~= h or h < 0 or h > 1 then
        error(string.format("caem.usage_figure: panel %d, layer %d: entropy %s is not in [0, 1]",
                            i, l, tostring(h)), 2)
      end
    end
    if layers == nil then
      layers, experts = #usage, usage.experts
    elseif #usage ~= layers or usage.experts ~= experts then
      error(string.format("caem.usage_figure: panel %d has %d layers of %d experts, panel 1 "
                          .. "%d of %d", i, #usage, usage.experts, layers, experts), 2)
    end
  end
  local largest = 0
  for _, panel in ipairs(panels) do
    for _, layer in ipairs(panel.usage) do
      for _, share in ipairs(layer_shares(layer, experts)) do
        largest = math.max(largest, share)
      end
    end
  end
  largest = largest > 0 and largest or 1

  local cell_w = math.max(10, math.floor(240 / experts))
  local cell_h = 18
  local label_w, margin, gap = 56, 20, 30
  local panel_w = label_w + experts * cell_w
  local heat_top = 60
  local heat_h = layers * cell_h
  local chart_top = heat_top + heat_h + 70
  local chart_h, chart_w = 180, math.max(360, #panels * (panel_w + gap) - gap - label_w)
  local width = math.max(margin * 2 + #panels * (panel_w + gap) - gap,
                         margin * 2 + label_w + chart_w + 140)
  local height = chart_top + chart_h + 60
  local out = {}
  local function add(format, ...)
    out[#out + 1] = string.format(format, ...)
  end
  local function layer_name(layer)
    return string.format("%s %d", layer.stack == "encoder" and "enc" or "dec", layer.block)
  end

  add('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
      .. 'font-family="sans-serif" font-size="11">\n', width, height)
  add('<rect width="100%%" height="100%%" fill="white"/>\n')
  add('<text x="%d" y="24" font-size="15">%s</text>\n', margin,
      xml_text(options.title or "Expert usage per MoE layer"))
  add('<text x="%d" y="42" fill="#555">share of kept tokens per expert; darkest = %.1f%%</text>\n',
      margin, 100 * largest)
  for p, panel in ipairs(panels) do
    local x0 = margin + (p - 1) * (panel_w + gap)
    add('<text x="%d" y="%d" font-size="13">%s</text>\n', x0 + label_w, heat_top - 6,
        xml_text(panel.title or ("panel " .. p)))
    for l, layer in ipairs(panel.usage) do
      local y = heat_top + (l - 1) * cell_h
      add('<text x="%d" y="%d" text-anchor="end">%s</text>\n', x0 + label_w - 4,
          y + cell_h - 5, layer_name(layer))
      for e, share in ipairs(layer_shares(layer, experts)) do
        local level = math.floor(255 * (1 - share / largest) + 0.5)
        add('<rect x="%d" y="%d" width="%d" height="%d" fill="rgb(%d,%d,255)" '
            .. 'stroke="#ddd"><title>%s expert %d: %.1f%%</title></rect>\n',
            x0 + label_w + (e - 1) * cell_w, y, cell_w, cell_h, level, level,
            layer_name(layer), e - 1, 100 * share)
      end
    end
    for e = 1, experts, math.max(1, math.floor(experts / 8)) do
      add('<text x="%d" y="%d" text-anchor="middle" fill="#555">%d</text>\n',
          x0 + label_w + (e - 1) * cell_w + cell_w // 2, heat_top + heat_h + 13, e - 1)
    end
  end
  add('<text x="%d" y="%d" fill="#555">expert</text>\n', margin + label_w,
      heat_top + heat_h + 28)

  -- entropy per layer
  local x0, y0 = margin + label_w, chart_top
  add('<text x="%d" y="%d" font-size="13">normalized entropy per MoE layer</text>\n', x0,
      y0 - 12)
  add('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>\n', x0, y0,
      chart_w, chart_h)
  for _, tick in ipairs({ 0, 0.25, 0.5, 0.75, 1 }) do
    local y = y0 + chart_h * (1 - tick)
    add('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>\n', x0, y, x0 + chart_w, y)
    add('<text x="%d" y="%.1f" text-anchor="end">%.2f</text>\n', x0 - 4, y + 4, tick)
  end
  local step = layers > 1 and chart_w / (layers - 1) or 0
  local function x_of(l)
    return layers > 1 and x0 + (l - 1) * step or x0 + chart_w / 2
  end
  for l, layer in ipairs(panels[1].usage) do
    add('<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>\n', x_of(l),
        y0 + chart_h + 14, layer_name(layer))
  end
  for p, panel in ipairs(panels) do
    local colour = line_colours[(p - 1) % #line_colours + 1]
    local points = {}
    for l, layer in ipairs(panel.usage) do
      points[l] = string.format("%.1f,%.1f", x_of(l), y0 + chart_h * (1 - layer.entropy))
    end
    add('<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>\n',
        table.concat(points, " "), colour)
    for l, layer in ipairs(panel.usage) do
      add('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s %s: %.3f</title></circle>\n',
          x_of(l), y0 + chart_h * (1 - layer.entropy), colour,
          xml_text(panel.title or ("panel " .. p)), layer_name(layer), layer.entropy)
    end
    add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>\n',
        x0 + chart_w + 12, y0 + 10 + (p - 1) * 16, x0 + chart_w + 30, y0 + 10 + (p - 1) * 16,
        colour)
    add('<text x="%d" y="%d">%s</text>\n', x0 + chart_w + 34, y0 + 14 + (p - 1) * 16,
        xml_text(panel.title or ("panel " .. p)))
  end
  add('</svg>\n')

  local temporary = options.path .. ".tmp"
  local file, message = io.open(temporary, "w")
  if file == nil then
    error("caem.usage_figure: cannot write " .. message, 2)
  end
  local ok, write_error = file:write(table.concat(out))
  local closed, close_error = file:close()
  if not ok or not closed then
    os.remove(temporary)
    error("caem.usage_figure: cannot write " .. temporary .. ": "
          .. tostring(write_error or close_error), 2)
  end
  local renamed, rename_error = os.rename(temporary, options.path)
  if not renamed then
    os.remove(temporary)
    error("caem.usage_figure: " .. tostring(rename_error), 2)
  end
  return options.path
end

return caem
