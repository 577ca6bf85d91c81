// Drives fiji_macro/LiveSPT.ijm through its interactive dialog in a real ImageJ under a
// virtual X server, as a person would: ImageJ's main window, an image window, the macro's
// GenericDialog filled in field by field and its OK button pressed, Swing folder choosers
// answered. Used by tests/test_fiji_macro.py (compiled there with javac against ij.jar).
//
//   java -cp ij.jar:CLASSES DialogDriver MACRO IMAGE|- TIMEOUT_S [key=value ...] [dir:key=PATH ...]
//
// key is a dialog field's key (its label's first word, lower case, as in ImageJ's macro
// options); dir:key answers the folder chooser whose title starts with that word. The
// driver prints, one per line: PREFILL key=value (the dialog's values before it is filled),
// CHOOSER title, LIVE_OVERLAY n / LIVE_RESULTS n (a visible overlay or Results table seen
// while the macro ran), MESSAGE text (any other dialog, closed), then after the macro ends
// WINDOW title (visible image windows), OVERLAY n, RESULTS n, the Log, and END.

import ij.IJ;
import ij.ImageJ;
import ij.ImagePlus;
import ij.Prefs;
import ij.WindowManager;
import ij.gui.GenericDialog;
import ij.gui.Overlay;
import ij.measure.ResultsTable;
import ij.text.TextWindow;

import java.awt.Button;
import java.awt.Checkbox;
import java.awt.Choice;
import java.awt.Component;
import java.awt.Container;
import java.awt.Dialog;
import java.awt.EventQueue;
import java.awt.Frame;
import java.awt.Label;
import java.awt.TextField;
import java.awt.Window;
import java.awt.event.ActionEvent;
import java.awt.event.ActionListener;
import java.io.File;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import javax.swing.JFileChooser;

public class DialogDriver {

    static String key(String label) {
        String k = label.trim();
        int space = k.indexOf(' ');
        if (space > 0) k = k.substring(0, space);
        return k.toLowerCase();
    }

    /** The dialog's fields in layout order, each under the text of the label before it. */
    static void fields(Container c, List<Object[]> out, String[] lastLabel) {
        for (Component child : c.getComponents()) {
            if (child instanceof Label) {
                lastLabel[0] = ((Label) child).getText();
            } else if (child instanceof TextField || child instanceof Choice) {
                out.add(new Object[] {key(lastLabel[0]), child});
            } else if (child instanceof Checkbox) {
                out.add(new Object[] {key(((Checkbox) child).getLabel()), child});
            } else if (child instanceof Container) {
                fields((Container) child, out, lastLabel);
            }
        }
    }

    static String valueOf(Object field) {
        if (field instanceof TextField) return ((TextField) field).getText();
        if (field instanceof Choice) return ((Choice) field).getSelectedItem();
        return String.valueOf(((Checkbox) field).getState());
    }

    static void fill(GenericDialog gd, Map<String, String> answers) throws Exception {
        List<Object[]> found = new ArrayList<>();
        fields(gd, found, new String[] {""});
        Set<String> used = new HashSet<>();
        for (Object[] f : found) {
            System.out.println("PREFILL " + f[0] + "=" + valueOf(f[1]));
            String v = answers.get((String) f[0]);
            if (v == null) continue;
            used.add((String) f[0]);
            Object field = f[1];
            EventQueue.invokeAndWait(() -> {
                if (field instanceof TextField) ((TextField) field).setText(v);
                else if (field instanceof Choice) ((Choice) field).select(v);
                else ((Checkbox) field).setState(Boolean.parseBoolean(v));
            });
        }
        for (String k : answers.keySet()) {
            if (!used.contains(k)) throw new IllegalStateException("the dialog has no field " + k);
        }
        press(gd, "OK");
    }

    static void press(Container c, String label) throws Exception {
        Button b = button(c, label);
        if (b == null) throw new IllegalStateException("no " + label + " button");
        EventQueue.invokeAndWait(() -> {
            for (ActionListener l : b.getActionListeners()) {
                l.actionPerformed(new ActionEvent(b, ActionEvent.ACTION_PERFORMED, label));
            }
        });
    }

    static Button button(Container c, String label) {
        for (Component child : c.getComponents()) {
            if (child instanceof Button && label.equals(((Button) child).getLabel().trim())) {
                return (Button) child;  // (ImageJ pads some button labels with spaces)
            }
            if (child instanceof Container) {
                Button b = button((Container) child, label);
                if (b != null) return b;
            }
        }
        return null;
    }

    static JFileChooser chooser(Container c) {
        for (Component child : c.getComponents()) {
            if (child instanceof JFileChooser) return (JFileChooser) child;
            if (child instanceof Container) {
                JFileChooser j = chooser((Container) child);
                if (j != null) return j;
            }
        }
        return null;
    }

    static String text(Container c) {
        StringBuilder sb = new StringBuilder();
        for (Component child : c.getComponents()) {
            if (child instanceof Label) sb.append(((Label) child).getText()).append(' ');
            else if (child instanceof ij.gui.MultiLineLabel) sb.append(lines(child)).append(' ');
            else if (child instanceof Container) sb.append(text((Container) child));
        }
        return sb.toString().trim();
    }

    static String lines(Component label) {
        try {  // ImageJ's MultiLineLabel keeps its text in a package-private field
            java.lang.reflect.Field f = ij.gui.MultiLineLabel.class.getDeclaredField("lines");
            f.setAccessible(true);
            return String.join(" ", (String[]) f.get(label));
        } catch (ReflectiveOperationException e) {
            return "?";
        }
    }

    public static void main(String[] args) {
        int status = 1;
        try {
            drive(args);
            status = 0;
        } catch (Throwable e) {
            System.out.println("DRIVER ERROR " + e);
            e.printStackTrace(System.out);
        } finally {
            System.out.flush();
            System.exit(status);  // ImageJ's windows would keep the JVM alive
        }
    }

    static void drive(String[] args) throws Exception {
        String macro = args[0];
        String image = args[1];
        long deadline = System.currentTimeMillis() + 1000L * Long.parseLong(args[2]);
        Map<String, String> answers = new LinkedHashMap<>();
        Map<String, String> folders = new LinkedHashMap<>();
        for (int i = 3; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            String k = args[i].substring(0, eq);
            String v = args[i].substring(eq + 1);
            if (k.startsWith("dir:")) folders.put(k.substring(4), v);
            else answers.put(k, v);
        }
        new ImageJ();
        if (!image.equals("-")) {
            ImagePlus imp = IJ.openImage(image);
            imp.show();
            IJ.wait(500);
        }
        Thread run = new Thread(() -> IJ.runMacroFile(macro, ""), "LiveSPT macro");
        run.start();
        Set<Window> handled = new HashSet<>();
        boolean liveOverlay = false;
        boolean liveResults = false;
        while (run.isAlive() && System.currentTimeMillis() < deadline) {
            for (Window w : Window.getWindows()) {
                if (!w.isShowing() || handled.contains(w)) continue;
                if (w instanceof GenericDialog && "LiveSPT".equals(((Dialog) w).getTitle())) {
                    handled.add(w);
                    fill((GenericDialog) w, answers);
                } else if (w instanceof Dialog && chooser((Container) w) != null) {
                    JFileChooser fc = chooser((Container) w);
                    String title = fc.getDialogTitle();
                    System.out.println("CHOOSER " + title);
                    String path = folders.get(key(title));
                    if (path == null) throw new IllegalStateException("no answer for the chooser " + title);
                    handled.add(w);
                    EventQueue.invokeAndWait(() -> {
                        fc.setSelectedFile(new File(path));
                        fc.approveSelection();
                    });
                } else if (w instanceof Dialog && !(w instanceof GenericDialog && ((Dialog) w).getTitle().equals("LiveSPT"))) {
                    handled.add(w);
                    System.out.println("MESSAGE " + ((Dialog) w).getTitle() + ": " + text((Container) w));
                    EventQueue.invokeAndWait(w::dispose);
                }
            }
            ImagePlus overlayImage = WindowManager.getImage("LiveSPT overlay");
            if (!liveOverlay && overlayImage != null && overlayImage.getWindow() != null
                    && overlayImage.getWindow().isShowing() && overlayImage.getOverlay() != null
                    && overlayImage.getOverlay().size() > 0) {
                liveOverlay = true;
                System.out.println("LIVE_OVERLAY " + overlayImage.getOverlay().size());
            }
            Frame results = WindowManager.getFrame("Results");
            int rows = ResultsTable.getResultsTable().size();
            if (!liveResults && results instanceof TextWindow && results.isShowing() && rows > 0) {
                liveResults = true;
                System.out.println("LIVE_RESULTS " + rows);
            }
            Thread.sleep(100);
        }
        if (run.isAlive()) System.out.println("TIMEOUT the macro is still running");
        IJ.wait(1000);
        for (int id : WindowManager.getIDList() == null ? new int[0] : WindowManager.getIDList()) {
            ImagePlus imp = WindowManager.getImage(id);
            if (imp.getWindow() != null && imp.getWindow().isShowing()) {
                System.out.println("WINDOW " + imp.getTitle());
            }
        }
        ImagePlus overlayImage = WindowManager.getImage("LiveSPT overlay");
        Overlay ov = overlayImage == null ? null : overlayImage.getOverlay();
        System.out.println("OVERLAY " + (ov == null ? 0 : ov.size()));
        System.out.println("RESULTS " + ResultsTable.getResultsTable().size());
        System.out.println("LOG");
        System.out.println(IJ.getLog());
        Prefs.savePreferences();  // as ImageJ does when it quits
        System.out.println("END");
    }
}
