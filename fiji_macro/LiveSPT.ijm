// LiveSPT client for ImageJ / Fiji: stream an image or a live acquisition to LiveSPT and
// watch each track's diffusion coefficient D while the results arrive.
//
// The macro language has no gRPC: this macro runs the installed `livespt` command
// (`livespt stream`) in the background and reads the files it writes as results arrive
// (tracks.csv, estimates.csv, changes.csv), updating a Results table (one row per track)
// and an overlay of the tracks coloured by D. See fiji_macro/README.md.
//
// Unattended:
//   java -jar ij.jar -batch LiveSPT.ijm "movie=PATH out=DIR [server=HOST:PORT] [follow=1]
//        [pixel=UM] [interval=S] [exposure=S] [idle=S] [livespt=COMMAND]"
// writes DIR/results.csv and DIR/overlay.png and prints `LIVESPT DONE` last, or
// `LIVESPT ERROR: <message>` on failure. Values with spaces go in brackets: movie=[a b.tif].

var PREFIX = "livespt.macro.";
var D_MIN_LOG = -3;   // colour scale of D: 10^-3 .. 10^1 um^2/s (fixed, log)
var D_MAX_LOG = 1;
var POLL_MS = 1000;
var SCALE = 1;         // the overlay image's pixels per camera pixel
// The settings: globals (`var`), so that functions (the dialog, the checks) can set them.
var movie = ""; var out = ""; var server = ""; var follow = false; var pixel = "";
var interval = ""; var exposure = ""; var idle = "10"; var livespt = ""; var window = "";
var tracker = "builtin"; var dark = false; var offset = ""; var gain = "";
var batch = false;     // unattended (key=value arguments) rather than the dialog
// What refresh() has parsed so far (it reads only the lines added since its last call).
var seenTracks = 0; var seenEstimates = 0; var seenChanges = 0; var parsedPx = -1;
var ids = newArray(0); var tableRows = -1; var drawnOn = 0;

args = getArgument();
batch = false;  // (the macro language assigns no string comparison: if/else)
if (args != "") batch = true;
setBatchMode(true);

// ------------------------------------------------------------------ settings
if (batch) {
    movie = value(args, "movie", "");
    out = value(args, "out", "");
    server = value(args, "server", "");
    follow = false;
    flag = value(args, "follow", "0");  // (a function's result is compared via a variable)
    if (flag == "1") follow = true;
    pixel = value(args, "pixel", "");
    interval = value(args, "interval", "");
    exposure = value(args, "exposure", "");
    idle = value(args, "idle", "10");
    livespt = value(args, "livespt", call("ij.Prefs.get", PREFIX + "livespt", ""));
    window = value(args, "window", "");
    tracker = value(args, "tracker", "builtin");
    dark = false;
    flag = value(args, "dark", "0");
    if (flag == "1") dark = true;
    offset = value(args, "offset", "");
    gain = value(args, "gain", "");
    if (movie == "") fail("movie= is required (an image file, or a folder with follow=1)");
    if (out == "") fail("out= is required (the output folder)");
} else {
    dialog();
    if (movie == "") fail("no acquisition folder chosen");
    if (out == "") fail("no output folder chosen");
}
if (livespt == "") livespt = findLivespt();
if (livespt == "") fail("livespt not found on the PATH: install livespt (pip install livespt) or give its path (livespt=/path/to/livespt)");
if (!File.exists(livespt)) fail("livespt not found at " + livespt + ": give the path of the installed command (livespt=/path/to/livespt)");
if (!batch) call("ij.Prefs.set", PREFIX + "livespt", livespt);

// ------------------------------------------------------------------ the image and its calibration
if (follow) {
    if (!File.isDirectory(movie) && !File.exists(movie)) fail("follow: " + movie + " does not exist");
} else {
    if (!File.exists(movie)) fail("movie " + movie + " does not exist");
    if (File.isDirectory(movie)) fail("movie " + movie + " is a folder: give follow=1 to follow an acquisition");
    checkImage(movie);
}
if (pixel == "" || interval == "") fail("calibration missing: the image has no pixel size or frame interval; give pixel=UM and interval=S (or set them in Image > Properties)");
File.makeDirectory(out);
if (!File.isDirectory(out)) fail("cannot create the output folder " + out);

// ------------------------------------------------------------------ run livespt in the background
// (ImageJ 1.52's macro language takes a user function's result only as a whole expression:
// results are put in variables before they are combined.)
qCommand = quote(livespt); qMovie = quote(movie); qOut = quote(out);
cmd = qCommand + " stream";
if (follow) cmd = cmd + " --follow " + qMovie + " --idle-timeout " + idle;
else cmd = cmd + " " + qMovie;
if (server == "") cmd = cmd + " --embedded";
else cmd = cmd + " --server " + server + " --connect-timeout 5";
cmd = cmd + " --pixel-size " + pixel + " --frame-interval " + interval;
if (exposure != "") cmd = cmd + " --exposure " + exposure;
if (window != "") cmd = cmd + " --window " + window;
if (tracker != "builtin") cmd = cmd + " --tracker " + tracker;
if (dark) cmd = cmd + " --dark-spots";
if (offset != "") cmd = cmd + " --camera-offset " + offset;
if (gain != "") cmd = cmd + " --camera-gain " + gain;
stopFile = out + File.separator + "livespt.stop";
if (File.exists(stopFile)) dummy = File.delete(stopFile);
if (follow) cmd = cmd + " --stop-file " + quote(stopFile);
cmd = cmd + " --out " + qOut;
exitFile = out + File.separator + "livespt.exit";
logFile = out + File.separator + "livespt.log";
qExit = quote(exitFile); qLog = quote(logFile);
if (File.exists(exitFile)) dummy = File.delete(exitFile);
for (k = 0; k < 3; k++) {  // results of an earlier run in this folder are not this run's
    name = newArray("tracks.csv", "estimates.csv", "changes.csv");
    if (File.exists(out + File.separator + name[k])) dummy = File.delete(out + File.separator + name[k]);
}
print("LiveSPT: " + cmd);
if (follow) print("LiveSPT: following " + movie + " until no new frame arrives for " + idle + " s, or until the file " + stopFile + " exists");
exec("sh", "-c", "(" + cmd + " > " + qLog + " 2>&1 < /dev/null; echo $? > " + qExit + ") > /dev/null 2>&1 < /dev/null &");

// ------------------------------------------------------------------ follow the results
background = 0;  // the overlay's image: opened once there are frames to draw on
if (!follow) background = openBackground(movie);
changesSeen = 0;
while (!File.exists(exitFile)) {
    wait(POLL_MS);
    // A followed folder: its first frame once livespt has read frames (then the file is
    // complete). A growing TIFF is opened only at the end, when nothing writes it.
    if (follow && background == 0 && File.isDirectory(movie) && File.exists(out + File.separator + "tracks.csv")) {
        first = firstFrame(movie);
        background = openBackground(first);
    }
    changesSeen = refresh(out, background, changesSeen);
}
status = trim(File.openAsString(exitFile));
if (status != "0") {
    why = lastLine(logFile);
    fail(why);
}
if (follow && background == 0) {
    last = lastFrame(movie);
    background = openBackground(last);
}
changesSeen = refresh(out, background, changesSeen);
writeResults(out + File.separator + "results.csv");
selectImage(background);
run("Flatten");
saveAs("PNG", out + File.separator + "overlay.png");
close();  // the flattened copy; the overlay stays on "LiveSPT overlay"
selectImage(background);
print("LiveSPT: results in " + out);
print("LIVESPT DONE");
if (!batch) setBatchMode("exit and display");  // the table and the overlay stay

// ================================================================== functions
function value(options, key, default) {
    v = call("ij.Macro.getValue", options, key, default);
    return v;
}

function fail(message) {
    print("LIVESPT ERROR: " + message);
    if (batch) exit();  // (under -batch a message box would wait for a click that never comes)
    exit("LiveSPT: " + message);
}

function trim(s) {
    return replace(s, "^\\s+|\\s+$", "");
}

function quote(s) {
    return "'" + replace(s, "'", "'\\''") + "'";
}

function findLivespt() {
    found = trim(exec("sh", "-c", "command -v livespt || true"));
    if (found != "" && File.exists(found)) return found;
    return "";
}

function checkImage(path) {
    // The image type and calibration, without keeping the (possibly large) stack open.
    open(path);
    id = getImageID();
    if (bitDepth() == 24) { close(); fail("RGB images are not supported: convert to 8- or 16-bit (Image > Type)"); }
    if (bitDepth() == 32) { close(); fail("32-bit float images are not supported: convert to 16-bit (Image > Type)"); }
    getPixelSize(unit, pw, ph);
    fi = Stack.getFrameInterval();
    if (pixel == "" && (unit == "micron" || unit == "um" || unit == fromCharCode(181) + "m")) pixel = d2s(pw, 9);
    if (pixel == "" && unit == "nm") pixel = d2s(pw / 1000, 9);
    if (interval == "" && fi > 0) interval = d2s(fi, 9);
    close();
}

function firstFrame(path) {
    // A followed folder's first frame file (natural order).
    files = getFileList(path);
    best = ""; bestKey = "";
    for (i = 0; i < files.length; i++) {
        if (endsWith(toLowerCase(files[i]), ".tif") || endsWith(toLowerCase(files[i]), ".tiff")) {
            key = naturalKey(files[i]);
            if (best == "" || key < bestKey) { best = files[i]; bestKey = key; }
        }
    }
    if (best == "") fail("follow: no frame file in " + path);
    return path + File.separator + best;
}

function lastFrame(path) {
    // A followed acquisition's last frame file (natural order), or its stack.
    if (!File.isDirectory(path)) return path;
    files = getFileList(path);
    best = ""; bestKey = "";
    for (i = 0; i < files.length; i++) {
        if (endsWith(toLowerCase(files[i]), ".tif") || endsWith(toLowerCase(files[i]), ".tiff")) {
            key = naturalKey(files[i]);
            if (best == "" || key > bestKey) { best = files[i]; bestKey = key; }
        }
    }
    if (best == "") fail("follow: no frame file in " + path);
    return path + File.separator + best;
}

function naturalKey(name) {
    // Numbers padded to 12 digits, so that string order is natural order.
    key = ""; digits = "";
    for (i = 0; i < lengthOf(name); i++) {
        c = substring(name, i, i + 1);
        if (c >= "0" && c <= "9") digits = digits + c;
        else {
            if (digits != "") { padded = pad(digits); key = key + padded; digits = ""; }
            key = key + c;
        }
    }
    if (digits != "") { padded = pad(digits); key = key + padded; }
    return key;
}

function pad(digits) {
    while (lengthOf(digits) < 12) digits = "0" + digits;
    return digits;
}

function openBackground(path) {
    // The image the overlay is drawn on: the movie's maximum projection, enlarged to at
    // least 512 pixels across (SCALE) so that tracks and the legend are visible.
    open(path);
    if (nSlices() > 1) {
        stack = getImageID();
        run("Z Project...", "projection=[Max Intensity]");
        projection = getImageID();
        selectImage(stack); close();  // (the stack itself is not kept open)
        selectImage(projection);
    }
    SCALE = maxOf(1, floor(512 / getWidth()));
    if (SCALE > 1) run("Size...", "width=" + (getWidth() * SCALE) + " height=" + (getHeight() * SCALE) + " interpolation=None");
    resetMinAndMax();
    rename("LiveSPT overlay");
    if (!batch) setBatchMode("show");  // interactive: the overlay is watched as it grows
    return getImageID();
}

function lines(path) {
    if (!File.exists(path)) return newArray(0);
    text = File.openAsString(path);
    all = split(text, "\n");
    if (all.length < 2) return newArray(0);
    // The last line may be being written: keep complete lines only (those before the last
    // newline).
    if (!endsWith(text, "\n")) all = Array.trim(all, all.length - 1);
    return Array.slice(all, 1);
}

function refresh(out, background, changesSeen) {
    // Results table and overlay from the files as they are now. Only the lines added since
    // the last call are parsed (the macro language is slow: ~50 us per point, so reparsing
    // everything each second would fall behind a long acquisition). List is the map from
    // track id to its points (in overlay pixels), latest D, counts.
    sep = File.separator;
    px = parseFloat(pixel) / SCALE;  // um per overlay pixel
    if (px != parsedPx) {  // the overlay's scale changed (its image opened): parse again
        List.clear(); ids = newArray(0); seenTracks = 0; seenEstimates = 0; seenChanges = 0;
        parsedPx = px;
    }
    tracks = lines(out + sep + "tracks.csv");
    estimates = lines(out + sep + "estimates.csv");
    changes = lines(out + sep + "changes.csv");
    fresh = tracks.length - seenTracks + estimates.length - seenEstimates + changes.length - seenChanges;
    for (i = seenTracks; i < tracks.length; i++) {
        f = split(tracks[i], ",");
        if (f.length < 4) continue;
        x = d2s(parseFloat(f[2]) / px, 2); y = d2s(parseFloat(f[3]) / px, 2);
        key = "t" + f[0];
        if (List.get(key) == "") {
            List.set(key, "" + ids.length);
            ids = Array.concat(ids, parseInt(f[0]));
            List.set("x" + f[0], x); List.set("y" + f[0], y); List.set("n" + f[0], "1");
        } else {
            List.set("x" + f[0], List.get("x" + f[0]) + "," + x);
            List.set("y" + f[0], List.get("y" + f[0]) + "," + y);
            List.set("n" + f[0], "" + (parseInt(List.get("n" + f[0])) + 1));
        }
        List.set("p" + f[0] + "_" + f[1], x + "," + y);  // point of (track, frame)
    }
    seenTracks = tracks.length;
    for (i = seenEstimates; i < estimates.length; i++) {  // the latest window of each track wins
        f = split(estimates[i], ",");
        if (f.length < 7) continue;
        List.set("e" + f[0], f[3] + "," + f[4] + "," + f[5] + "," + f[6]);
    }
    seenEstimates = estimates.length;
    for (i = seenChanges; i < changes.length; i++) {
        f = split(changes[i], ",");
        if (f.length < 6) continue;
        c = List.get("c" + f[0]);
        if (c == "") c = "0";
        List.set("c" + f[0], "" + (parseInt(c) + 1));
        if (i >= changesSeen) {
            before = number(f[3]); after = number(f[4]);
            print("LiveSPT: change of D on track " + f[0] + " at frame " + f[1] + ": " + d2s(before, 3) + " -> " + d2s(after, 3) + " um^2/s");
        }
    }
    seenChanges = changes.length;
    if (fresh == 0 && tableRows == ids.length && drawnOn == background) return changes.length;
    // The Results table: one row per track (rebuilt: one pass over the tracks, not points).
    n = ids.length;
    d = newArray(n); Array.fill(d, NaN);
    run("Clear Results");
    for (k = 0; k < n; k++) {
        id = "" + ids[k];
        lo = NaN; hi = NaN; method = "";
        e = List.get("e" + id);
        if (e != "") {
            v = split(e, ",");
            d[k] = number(v[0]); lo = number(v[1]); hi = number(v[2]); method = v[3];
        }
        c = List.get("c" + id);
        if (c == "") c = "0";
        setResult("track_id", k, ids[k]);
        setResult("n_spots", k, parseInt(List.get("n" + id)));
        setResult("d_um2_s", k, d[k]);
        setResult("d_low_um2_s", k, lo);
        setResult("d_high_um2_s", k, hi);
        setResult("method", k, method);
        setResult("n_changes", k, parseInt(c));
    }
    updateResults();
    tableRows = n;
    if (background != 0) { drawOverlay(background, changes, d); drawnOn = background; }
    return changes.length;
}

function number(s) {
    if (s == "inf") return 1/0;
    if (s == "-inf") return -1/0;
    return parseFloat(s);
}

function colourOf(dValue) {
    // A fixed log scale: blue (10^D_MIN_LOG) .. red (10^D_MAX_LOG); grey without a D.
    if (isNaN(dValue) || dValue <= 0) return "#999999";
    t = (log(dValue) / log(10) - D_MIN_LOG) / (D_MAX_LOG - D_MIN_LOG);
    t = minOf(1, maxOf(0, t));
    r = round(255 * t); g = round(255 * (1 - abs(2 * t - 1)) * 0.8); b = round(255 * (1 - t));
    hr = hex2(r); hg = hex2(g); hb = hex2(b);
    return "#" + hr + hg + hb;
}

function hex2(v) {
    s = toHex(v);
    if (lengthOf(s) < 2) s = "0" + s;
    return s;
}

function drawOverlay(background, changes, d) {
    // A polyline per track (points already in overlay pixels: no per-point macro work).
    selectImage(background);
    Overlay.remove;
    for (k = 0; k < ids.length; k++) {
        xs = split(List.get("x" + ids[k]), ",");
        ys = split(List.get("y" + ids[k]), ",");
        if (xs.length > 1) {
            makeSelection("polyline", xs, ys);
            colour = colourOf(d[k]);
            Roi.setStrokeColor(colour);
            Roi.setStrokeWidth(2);
            Overlay.addSelection;
        }
    }
    // Change points: a white circle where D changed.
    for (i = 0; i < changes.length; i++) {
        f = split(changes[i], ",");
        p = List.get("p" + f[0] + "_" + f[1]);
        if (p != "") {
            xy = split(p, ",");
            makeOval(parseFloat(xy[0]) - 4, parseFloat(xy[1]) - 4, 8, 8);
            Roi.setStrokeColor("#ffffff");
            Overlay.addSelection;
        }
    }
    run("Select None");
    // Legend: the colour scale.
    w = getWidth(); h = getHeight();
    setFont("SansSerif", 12);
    legend = "D (um^2/s): 1e" + D_MIN_LOG + " .. 1e" + D_MAX_LOG + ";  o: change of D";
    bar = maxOf(40, round(w / 3));
    x0 = w - maxOf(bar, getStringWidth(legend)) - 6; y0 = h - 16;
    for (i = 0; i < bar; i++) {
        v = pow(10, D_MIN_LOG + (D_MAX_LOG - D_MIN_LOG) * i / (bar - 1));
        colour = colourOf(v);
        setColor(colour);
        Overlay.drawLine(x0 + i, y0, x0 + i, y0 + 6);
    }
    setColor("#ffffff");
    Overlay.drawString(legend, x0, y0 - 2);
    Overlay.show;
}

function writeResults(path) {
    f = File.open(path);
    print(f, "track_id,n_spots,d_um2_s,d_low_um2_s,d_high_um2_s,method,n_changes");
    for (k = 0; k < nResults; k++) {
        dv = num(getResult("d_um2_s", k)); lv = num(getResult("d_low_um2_s", k));
        hv = num(getResult("d_high_um2_s", k));
        print(f, d2s(getResult("track_id", k), 0) + "," + d2s(getResult("n_spots", k), 0) + ","
              + dv + "," + lv + "," + hv + "," + getResultString("method", k) + ","
              + d2s(getResult("n_changes", k), 0));
    }
    File.close(f);
}

function num(v) {
    if (isNaN(v)) return "nan";
    if (v == 1/0) return "inf";
    return d2s(v, 9);
}

function lastLine(path) {
    if (!File.exists(path)) return "livespt failed (no log)";
    all = split(trim(File.openAsString(path)), "\n");
    for (i = all.length - 1; i >= 0; i--) {
        line = trim(all[i]);
        if (line != "" && indexOf(line, "streaming:") < 0 && indexOf(line, "following:") < 0) return line;
    }
    return "livespt failed";
}

function dialog() {
    // Interactive: the active image (or a followed acquisition), with the last values.
    // Each label's first word is its key for ImageJ's macro options (the macro recorder,
    // run("LiveSPT", "server=... pixel=...")): the same keys as the unattended arguments.
    g = "ij.Prefs.get";
    modes = newArray("Analyse the active image", "Follow a live acquisition");
    Dialog.create("LiveSPT");
    Dialog.addChoice("Mode", modes, call(g, PREFIX + "mode", modes[0]));
    Dialog.addString("Acquisition to follow (a folder or a growing TIFF; empty: choose a folder)", call(g, PREFIX + "acquisition", ""), 32);
    Dialog.addString("Server (host:port; empty: embedded)", call(g, PREFIX + "server", ""), 24);
    px0 = ""; fi0 = "";
    if (nImages() > 0) {
        getPixelSize(unit, pw, ph);
        if (unit == "micron" || unit == "um" || unit == fromCharCode(181) + "m") px0 = d2s(pw, 6);
        if (unit == "nm") px0 = d2s(pw / 1000, 6);
        if (Stack.getFrameInterval() > 0) fi0 = d2s(Stack.getFrameInterval(), 6);
    }
    if (px0 == "") px0 = call(g, PREFIX + "pixel", "");
    if (fi0 == "") fi0 = call(g, PREFIX + "interval", "");
    Dialog.addString("Pixel size (um)", px0);
    Dialog.addString("Interval between frames (s)", fi0);
    Dialog.addString("Exposure (s; empty: the interval)", call(g, PREFIX + "exposure", ""));
    Dialog.addString("Offset of the camera (ADU; empty: estimated)", call(g, PREFIX + "offset", ""));
    Dialog.addString("Gain of the camera (ADU/e-; empty: estimated)", call(g, PREFIX + "gain", ""));
    Dialog.addNumber("Window length (frames)", parseInt(call(g, PREFIX + "window", "10")));
    Dialog.addChoice("Tracker", newArray("builtin", "trackmate", "trackmate-lap"), call(g, PREFIX + "tracker", "builtin"));
    dark0 = false;
    flag = call(g, PREFIX + "dark", "false");
    if (flag == "true") dark0 = true;
    Dialog.addCheckbox("Dark spots on a light background", dark0);
    Dialog.addNumber("Idle time that ends a followed acquisition (s)", parseFloat(call(g, PREFIX + "idle", "10")));
    Dialog.addString("livespt command (empty: found on the PATH)", call(g, PREFIX + "livespt", ""), 32);
    Dialog.show();
    mode = Dialog.getChoice();
    movie = Dialog.getString();
    server = Dialog.getString(); pixel = Dialog.getString(); interval = Dialog.getString();
    exposure = Dialog.getString(); offset = Dialog.getString(); gain = Dialog.getString();
    // (numbers as text without a fraction where one is meaningless: --window takes an integer)
    w = Dialog.getNumber(); tracker = Dialog.getChoice(); dark = Dialog.getCheckbox();
    t = Dialog.getNumber();
    window = d2s(w, 0); idle = d2s(t, 3);
    livespt = Dialog.getString();
    server = trim(server); pixel = trim(pixel); interval = trim(interval); movie = trim(movie);
    s = "ij.Prefs.set";
    call(s, PREFIX + "mode", mode); call(s, PREFIX + "server", server);
    call(s, PREFIX + "acquisition", movie);
    call(s, PREFIX + "pixel", pixel); call(s, PREFIX + "interval", interval);
    call(s, PREFIX + "exposure", exposure); call(s, PREFIX + "offset", offset);
    call(s, PREFIX + "gain", gain); call(s, PREFIX + "window", window);
    call(s, PREFIX + "tracker", tracker); call(s, PREFIX + "dark", "" + dark);
    call(s, PREFIX + "idle", idle);
    follow = false;
    if (mode == modes[1]) follow = true;
    if (follow) {
        if (movie == "") movie = getDirectory("Acquisition folder (where the frames are being written)");
    } else {
        if (nImages() == 0) fail("no image is open: open the movie first, or choose the mode Follow a live acquisition");
        dir = getDirectory("image"); name = getInfo("image.filename");
        if (dir == "" || name == "") fail("the active image is not saved in a file: save it as TIFF first (File > Save As > Tiff)");
        movie = dir + name;
    }
    out = getDirectory("Output folder for the results");
    movie = noTrailingSeparator(movie); out = noTrailingSeparator(out);
}

function noTrailingSeparator(path) {
    if (lengthOf(path) > 1 && endsWith(path, File.separator)) return substring(path, 0, lengthOf(path) - 1);
    return path;
}
