"""The kiosk: ID card readers, typed ID numbers, the quota, the thermal printer."""
