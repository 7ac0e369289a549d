"""Fine-tuning runners: segmentation through nnU-Net, classification with encoder + head."""
