from harness.cli import main

# Guarded: nnU-Net's worker pools use the "spawn" start method, which imports the main module.
if __name__ == "__main__":
    raise SystemExit(main())
