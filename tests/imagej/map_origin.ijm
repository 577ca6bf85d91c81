// Prints where ImageJ places map pixels 0 and 6 of the localizer's map given as argument.
path = getArgument();
open(path);
getPixelSize(unit, pw, ph);
x = 0; y = 0;
toScaled(x, y);
x6 = 6; y6 = 6;
toScaled(x6, y6);
print("pw=" + d2s(pw, 6) + " x0=" + d2s(x, 6) + " y0=" + d2s(y, 6) + " x6=" + d2s(x6, 6));
