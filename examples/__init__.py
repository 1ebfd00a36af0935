"""Ray Tune's examples, ported by changing their imports (run each as a script)."""
