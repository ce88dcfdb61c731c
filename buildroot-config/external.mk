include $(sort $(wildcard $(BR2_EXTERNAL_INTROVISOR_PATH)/package/*/*.mk))
