"""The MONAI Deploy application (`pip install "medclip-ad[deploy]"`): see `medclip_ad.deploy.app`."""
