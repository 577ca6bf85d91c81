// Prints the calibration ImageJ reads from the movie given as the macro argument.
path = getArgument();
open(path);
getPixelSize(unit, pw, ph);
Stack.getDimensions(w, h, c, s, f);
print("unit=" + unit + " pw=" + d2s(pw, 6) + " finterval=" + d2s(Stack.getFrameInterval(), 6) + " frames=" + f + " slices=" + s + " bitDepth=" + bitDepth());
